"""Speed benchmark: videomt-jax vs Hugging Face transformers (`videomt-jax bench`), and FLOP counts.

Importing this package is cheap (no jax, no torch): the command line imports it to build its parser.
"""

from videomt_jax.bench.cli import add_parsers, main, run_bench
from videomt_jax.bench.flops import flops, flops_breakdown
from videomt_jax.bench.settings import BenchSettings

__all__ = ["BenchSettings", "add_parsers", "flops", "flops_breakdown", "main", "run_bench"]
