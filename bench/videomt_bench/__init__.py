"""Speed benchmark harness: videomt-jax vs Hugging Face transformers, and FLOP counts.

Not installed with the library: run it as `python bench/run_bench.py` (or `make bench`,
`videomt-jax bench`) from a checkout. Importing this package is cheap (no jax, no torch).
"""

from videomt_bench.cli import main, run_bench
from videomt_bench.flops import flops, flops_breakdown
from videomt_bench.settings import BenchSettings

__all__ = ["BenchSettings", "flops", "flops_breakdown", "main", "run_bench"]
