"""Device mesh and shardings for data-parallel training.

One mesh axis, 'data', over every device (all local devices of all processes). Batches are split along
their leading axis; the train state is replicated. `jax.jit` with these shardings is the
pmap-equivalent recommended by current JAX; BatchNorm statistics are reduced over the whole global batch,
so N devices compute the same step as one device up to float rounding.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: all devices)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
  """Shards the batch axis; `leading_axes` unsharded axes come first (e.g. 1 for (steps, batch, ...))."""
  return NamedSharding(mesh, P(*([None] * leading_axes), DATA_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh, name: str = "train.batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{name}={batch_size} must be a multiple of the number of devices ({n}) for data parallelism")


def round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple
