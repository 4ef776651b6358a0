"""XLA compiler options for the jitted model functions of this package, per backend.

On CPU, XLA:CPU hands matrix products and the element-wise work around them to YNNPACK
fusions by default. Keeping only reductions there (products go to XLA's own dot runtime) made
the ViT-S clip forward 8% faster at 320x320 and left the training step unchanged
(docs/performance.md). Other backends get no options.

    step = jit_model(fn, donate_argnums=(1,))     # jax.jit with this backend's options

The options are per compilation (`jax.jit(..., compiler_options=...)`), so the rest of the
process is untouched. They are left out when `XLA_FLAGS` already sets the same option, and
when this jaxlib does not know them. JAX takes compiler options on the outermost jit only: a
`jit_model` function cannot be called inside another jit. To get the same speed from your own
jit of `model.apply`, pass `compiler_options=compiler_options()` to it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

CPU_OPTIONS: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}
OPTIONS: dict[str, dict[str, Any]] = {"cpu": CPU_OPTIONS}


@functools.cache
def compiler_options(backend: str | None = None) -> dict[str, Any]:
    """The options `jit_model` compiles with on `backend` (default: JAX's default backend)."""
    backend = backend or jax.default_backend()
    user_flags = os.environ.get("XLA_FLAGS", "")
    wanted = {k: v for k, v in OPTIONS.get(backend, {}).items() if f"--{k}" not in user_flags}
    if not wanted or backend != jax.default_backend():
        return wanted
    try:  # an older or newer jaxlib may not know an option or one of its values
        jax.jit(lambda x: x @ x).lower(jnp.zeros((2, 2))).compile(compiler_options=wanted)
    except jax.errors.JaxRuntimeError:
        return {}
    return wanted


def jit_model(fn: Callable, **jit_kwargs: Any) -> Callable:
    """`jax.jit(fn, **jit_kwargs)` compiled with `compiler_options()`."""
    return jax.jit(fn, compiler_options=compiler_options() or None, **jit_kwargs)
