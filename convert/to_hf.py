"""Export a videomt-jax directory (or any checkpoint videomt-jax reads) to a Hugging Face directory.

    python -m convert.to_hf SRC OUT [--overwrite]
"""

from __future__ import annotations

import argparse
import sys

from videomt_jax.cli_convert import add_source_arguments, export_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert.to_hf", description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    return export_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
