"""Run the videomt-jax vs Hugging Face speed benchmark; same options as `videomt-jax bench` and `make bench`.

python bench/run_bench.py                                   # backend defaults (CPU: small, 320², fp32)
python bench/run_bench.py --presets small,base,large --size 640 --dtype bfloat16 --json bench.json
"""

from __future__ import annotations

import sys

from videomt_bench import main

if __name__ == "__main__":
    sys.exit(main())
