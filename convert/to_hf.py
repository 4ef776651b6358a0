"""Export a videomt-jax directory (or any checkpoint videomt-jax reads) to a Hugging Face directory.

python convert/to_hf.py SRC OUT [--overwrite]
"""

from __future__ import annotations

import argparse
import sys

from videomt_jax.cli.convert import add_source_arguments
from videomt_jax.cli.export import export_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python convert/to_hf.py", description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    return export_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
