"""Deployment: the streaming step as a serialised `jax.export` artifact and as an ONNX model.

- `videomt_jax.serving.export.export_serving`: write a `jax.export` artifact directory
  (one artifact per platform, float32 weights beside it, a JSON description).
- `videomt_jax.serving.load.load_serving`: run such a directory with nothing but `jax` and
  `numpy` (no flax, no model code); the loader module imports nothing else from this package.
- `videomt_jax.serving.onnx_export.export_onnx`: the same streaming step as an ONNX model
  (needs the `onnx` extra: jax2onnx, onnx, onnxruntime), traced from `plain_forward`.

This file imports nothing, so `from videomt_jax.serving.load import load_serving` stays light.
"""
