"""Convert an HF directory / Hub id / authors' .pth to a videomt-jax (orbax) directory.

python convert/to_jax.py SRC OUT [--dtype bfloat16] [--overwrite] [--num-heads N] ...
"""

from __future__ import annotations

import argparse
import sys

from videomt_jax.cli.convert import add_convert_arguments, convert_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python convert/to_jax.py", description=__doc__.splitlines()[0])
    add_convert_arguments(parser)
    return convert_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
