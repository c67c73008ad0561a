"""Device mesh and shardings for data-parallel training.

One mesh axis, 'data', over every device (all local devices of all processes). Batches are split along
their leading axis; the train state is replicated. `jax.jit` with these shardings is the
pmap-equivalent recommended by current JAX; BatchNorm statistics are reduced over the whole global batch,
so N devices compute the same step as one device up to float rounding.

With several processes (`train.distributed.initialize`) the mesh spans the devices of all of them; `put`
places host values on it with each process building only the shards on its own devices, from its own copy
of the (identical) host values -- no cross-process transfer or check.
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


def put(tree, shardings):
  """Host values (NumPy or local arrays) -> global arrays with `shardings` (one sharding, or a tree of them).

  One process: `jax.device_put`. Several: `jax.make_array_from_callback`, each process slicing the shards of
  its addressable devices out of its own copy, which must be the same on every process (the data set and
  the batch plan are functions of the config and the seed). Arrays that already span several processes
  are resharded with `jax.device_put`.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: _put_global(x, shardings), tree)
  return jax.tree.map(_put_global, tree, shardings)


def _put_global(x, sharding):
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  host = host.astype(jax.dtypes.canonicalize_dtype(host.dtype), copy=False)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def check_batch_divisible(batch_size: int, mesh: Mesh, name: str = "train.batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{name}={batch_size} must be a multiple of the number of devices ({n}) for data parallelism")


def round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple
