"""Standalone checkpoint converters (thin wrappers over `videomt_jax.cli_convert`).

    python -m convert.to_jax SRC OUT [--dtype bfloat16] [--overwrite]   # -> videomt-jax (orbax)
    python -m convert.to_hf  SRC OUT [--overwrite]                      # -> Hugging Face layout
"""
