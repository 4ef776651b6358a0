"""The parameter shapes a config implies, and the check of a parameter tree against them.

The model is their one source of truth: the shapes are traced from `init_params` (`jax.eval_shape`,
nothing is computed) and cached per config. This is the only module of the weight code that imports
the model; the conversion engine (`tables.py`) takes the shapes as an argument.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.family import init_params
from videomt_jax.weights.readers import CheckpointReadError
from videomt_jax.weights.tables import SEP, ConversionError, flatten, listing


def expected_shapes(config: VideomtConfig) -> dict[str, tuple[int, ...]]:
    """Flat {path: shape} of the parameters `init_params(config, key)` would create (traced, not run)."""
    return dict(_expected_shapes(config))


@functools.lru_cache(maxsize=16)
def _expected_shapes(config: VideomtConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    tree = jax.eval_shape(partial(init_params, config), jax.random.key(0))
    return tuple((k, tuple(v.shape)) for k, v in traverse_util.flatten_dict(tree, sep=SEP).items())


def check_params(config: VideomtConfig, params: Mapping) -> None:
    """Raise `ConversionError` unless `params` has exactly the paths and shapes `config` implies."""
    expected = expected_shapes(config)
    got = {k: tuple(np.shape(v)) for k, v in flatten(params).items()}
    missing = [p for p in expected if p not in got]
    extra = [p for p in got if p not in expected]
    wrong = [f"{p} {got[p]} (expected {expected[p]})" for p in expected if p in got and got[p] != expected[p]]
    problems = [("missing", missing), ("unexpected", extra), ("wrong shape", wrong)]
    message = "; ".join(f"{what} ({len(keys)}): {listing(keys)}" for what, keys in problems if keys)
    if message:
        raise ConversionError(f"parameters do not match the config: {message}")


def nonfinite_counts(params: Mapping) -> dict[str, int]:
    """{path: number of NaN / Inf values} of the floating parameters that hold any."""
    flat = {k: jnp.asarray(v) for k, v in flatten(params).items()}
    counts = jax.device_get(
        {k: jnp.sum(~jnp.isfinite(v)) for k, v in flat.items() if jnp.issubdtype(v.dtype, jnp.inexact)}
    )
    return {k: int(n) for k, n in sorted(counts.items()) if n}


def check_finite(params: Mapping, source: str) -> None:
    """Refuse parameters holding NaN or Inf (a corrupt file or a diverged training): one line naming
    the first such parameter (CheckpointReadError)."""
    bad = nonfinite_counts(params)
    if bad:
        first, count = next(iter(bad.items()))
        others = f" and {len(bad) - 1} other parameter(s)" if len(bad) > 1 else ""
        raise CheckpointReadError(
            f"{source}: parameter {first} holds {count} non-finite value(s) (NaN or Inf){others}; "
            "the checkpoint is corrupt or its training diverged: not loading it"
        )


def param_bytes(params: Mapping) -> tuple[int, int]:
    """(number of parameters, bytes) of a parameter tree."""
    leaves = jax.tree.leaves(params)
    sizes = [(math.prod(np.shape(x)), np.dtype(x.dtype).itemsize) for x in leaves]
    return sum(n for n, _ in sizes), sum(n * itemsize for n, itemsize in sizes)
