"""Streamed training images: batches read by index from an image source instead of a device-resident set.

A trainer's plan is a pure function of (seed, step) that gives *indices* (`loop.EpochPlan`, the autoencoder's
penalty class sample). With the training set in device memory the jitted step gathers those indices there;
when the set is too large for that, `FedPlan` reads the same indices' images from an `ImageSource` on the
host and hands the step the images themselves -- so a streamed run trains on exactly the batches of an
in-memory run with the same seed, and its memory does not grow with the data.

Each process reads only the rows of the global batch that live on its own devices (`local_rows`), so over
an epoch every training image is read exactly once across all processes. The source decodes ahead of the
step (`data.file_images.FileImages` maps its decoder over a prefetching, parallel tf.data pipeline) and keeps
what it decoded in a per-stream cache on local disk, which `FedPlan.close` frees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from jax.sharding import Mesh

from deepsmote_jax.train import loop
from deepsmote_jax.train import mesh as mesh_lib


@runtime_checkable
class ImageSource(Protocol):
  """Images addressed by index, read step by step (implemented by `data.file_images.FileImages`)."""

  image_shape: tuple[int, int, int]

  def __len__(self) -> int: ...

  def fingerprint(self) -> str:
    """Identity of the images (files and decoding settings), for checkpoint compatibility."""
    ...

  def stream(self, reads: Callable[[int], np.ndarray], first: int, last: int) -> Iterator[np.ndarray]:
    """uint8 (len(reads(s)), H, W, C) images of `reads(s)` for each step s in [first, last), in order."""
    ...

  def cached_reads(self):
    """An object whose `[indices]` gives uint8 (len(indices), H, W, C) images, for images read again and again
    (held-out images at every evaluation): each read at most once from its file while the object lives."""
    ...


def fingerprint(images: np.ndarray | ImageSource, labels: np.ndarray) -> str:
  """The training data's identity (checkpoints of another data set are never resumed). A source is known by
  its own fingerprint, so a streamed run and the same images in memory count as different runs."""
  labels = np.asarray(labels, np.int32)
  if isinstance(images, ImageSource):
    return loop.fingerprint(np.frombuffer(images.fingerprint().encode(), np.uint8), labels)
  return loop.fingerprint(np.asarray(images), labels)


def images_shape(images) -> tuple[int, ...]:
  """(N, H, W, C) of uint8 images given as an array or an `ImageSource`, without reading any of them."""
  if isinstance(images, ImageSource):
    return (len(images), *images.image_shape)
  return np.shape(images)


def local_rows(mesh: Mesh, size: int) -> np.ndarray:
  """Rows of a batch axis of `size` split over the mesh's 'data' axis that live on this process's devices."""
  sharding = mesh_lib.batch_sharding(mesh)
  rows = set()
  for index in sharding.addressable_devices_indices_map((size,)).values():
    rows.update(range(*index[0].indices(size)))
  return np.asarray(sorted(rows), np.int64)


PLAN_BLOCK = 16  # steps planned at a time by `FedPlan`


class FedPlan:
  """A plan whose index keys are replaced by the images they address, read from `source`.

  `plan(first, n)` gives stacked host batches with index keys (`images_of`: index key -> image key, e.g.
  {'index': 'image', 'class_index': 'class_image'}); `labels` (optional) adds 'label' for the 'index' key.
  Rows of the batch that live on other processes' devices stay zero here: `mesh.put` takes from each
  process only the shards of its own devices.
  """

  def __init__(
    self,
    plan: Callable[[int, int], dict],
    source: ImageSource,
    *,
    mesh: Mesh,
    total_steps: int,
    images_of: Mapping[str, str],
    labels: np.ndarray | None = None,
  ):
    self.plan, self.source, self.total_steps = plan, source, int(total_steps)
    self.images_of, self.labels = dict(images_of), labels
    self.steps_per_epoch = plan.steps_per_epoch
    example = plan(0, 1)
    self._widths = {k: example[k].shape[1] for k in self.images_of}
    self._rows = {k: local_rows(mesh, w) for k, w in self._widths.items()}
    self._iterator: Iterator[np.ndarray] | None = None
    self._position = -1
    # Plans of PLAN_BLOCK steps from `reads` (the stream's thread), taken back by `__call__`: each step is
    # planned once, a block at a time (a penalty class draw costs 2.0 ms for 1 step, 13 ms for 16), and the
    # plan (whose epoch cache is not thread-safe) is called from one thread.
    self._planned: dict[int, dict] = {}

  def close(self) -> None:
    """Drops the open stream (its tf.data threads and decoded-image cache): a process that exits with a stream
    still open can hang at interpreter shutdown, so `loop.run` closes its batch source when a run ends,
    finished or not."""
    if hasattr(self._iterator, "close"):
      self._iterator.close()
    self._iterator, self._position = None, -1
    self._planned.clear()

  def _plan_of(self, step: int) -> dict:
    """`plan(step, 1)`, drawn with the rest of its block of PLAN_BLOCK steps."""
    block = step - step % PLAN_BLOCK
    batches = self._planned.get(block)
    if batches is None:
      batches = self._planned[block] = self.plan(block, PLAN_BLOCK)
    return {k: v[step - block : step - block + 1] for k, v in batches.items()}

  def reads(self, step: int) -> np.ndarray:
    """The image indices this process reads for `step`: its rows of each index key, in key order."""
    batch = self._plan_of(step)
    return np.concatenate([batch[k][0, self._rows[k]] for k in self.images_of]).astype(np.int64)

  def __call__(self, first: int, n: int) -> dict:
    if self._iterator is None or first != self._position:
      self.close()
      self._iterator = iter(self.source.stream(self.reads, first, max(self.total_steps, first + n)))
      self._position = first
    shape = tuple(self.source.image_shape)
    filled = {k: np.zeros((n, w, *shape), np.uint8) for k, w in self._widths.items()}
    planned = []
    for i in range(n):
      images = next(self._iterator)  # the stream called `reads(first + i)` before it read these
      planned.append(self._plan_of(first + i))
      if (first + i + 1) % PLAN_BLOCK == 0:
        self._planned.pop(first + i + 1 - PLAN_BLOCK, None)  # the block is used up
      start = 0
      for k in self.images_of:
        rows = self._rows[k]
        filled[k][i, rows] = images[start : start + len(rows)]
        start += len(rows)
    self._position += n
    batches = {k: np.concatenate([p[k] for p in planned]) for k in planned[0]}
    out = {k: v for k, v in batches.items() if k not in self.images_of}
    if self.labels is not None:
      out["label"] = self.labels[batches["index"]].astype(np.int32)
    out.update({image_key: filled[k] for k, image_key in self.images_of.items()})
    return out


class HeldOutImages:
  """Held-out images (and optional labels) in chunks of one compiled shape, split over the mesh's 'data' axis.

  In memory they are padded (the last image repeated, label -1) and put on the devices once; a streamed source
  is read chunk by chunk at every pass instead, so evaluating it never holds more than one chunk in memory --
  through the source's `cached_reads()` (`FileImages`: each file decoded at the first pass only, read back
  from local disk at the next). Iterating yields (images, labels or None) on the mesh.
  """

  def __init__(self, images, mesh: Mesh, chunk: int, labels: np.ndarray | None = None):
    self.n = len(images)
    if self.n == 0:
      raise ValueError("the validation set is empty")
    self.chunk = mesh_lib.round_up(min(chunk, self.n), mesh.devices.size)
    total = mesh_lib.round_up(self.n, self.chunk)
    self._rows = np.minimum(np.arange(total), self.n - 1).reshape(-1, self.chunk)  # padding: the last image
    self._labels = None
    if labels is not None:
      self._labels = np.concatenate([np.asarray(labels, np.int32), np.full(total - self.n, -1, np.int32)])
    self._sharding = mesh_lib.batch_sharding(mesh)
    self._source = images.cached_reads() if isinstance(images, ImageSource) else None
    self._placed = None
    if self._source is None:
      images = np.asarray(images)
      self._placed = [self._put(images[rows], i) for i, rows in enumerate(self._rows)]

  def _put(self, x: np.ndarray, i: int):
    y = None if self._labels is None else self._labels[i * self.chunk : (i + 1) * self.chunk]
    return mesh_lib.put(x, self._sharding), None if y is None else mesh_lib.put(y, self._sharding)

  def __iter__(self):
    if self._placed is not None:
      yield from self._placed
      return
    for i, rows in enumerate(self._rows):
      yield self._put(self._source[rows], i)
