"""The one conversion between stored pixels and model inputs: uint8 [0, 255] <-> float [-1, 1].

The decoder ends in Tanh, so [-1, 1] is the range every model here reads and writes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def to_unit_range(images_u8: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return images_u8.astype(jnp.float32) * (2.0 / 255.0) - 1.0


def to_uint8(x: jax.Array) -> jax.Array:
  """float [-1, 1] -> uint8 [0, 255], rounded to nearest and clipped."""
  return jnp.clip(jnp.round((x.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
