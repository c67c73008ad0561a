"""Compute-dtype policy: float32 parameters and normalisation statistics, bf16 (or f32) arithmetic."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_DTYPES = {
  "float32": jnp.float32,
  "f32": jnp.float32,
  "bfloat16": jnp.bfloat16,
  "bf16": jnp.bfloat16,
  "float16": jnp.float16,
  "f16": jnp.float16,
}


def compute_dtype(name: str):
  """'bfloat16' | 'float32' | 'auto' (bf16 on GPU/TPU, float32 on CPU where bf16 is emulated and slow)."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if name not in _DTYPES:
    raise ValueError(f"unknown compute dtype {name!r} (train.compute_dtype); use one of {sorted(_DTYPES)} or 'auto'")
  return _DTYPES[name]
