"""tf.data input pipeline feeding JAX: sharded, seeded, batched to static shapes, prefetched to devices.

`make_dataset` builds a `tf.data.Dataset` from an `ImageSet` in memory or from a file list (decoded with
tf.io for PNG/JPEG, with the Pillow code of `load_image_folder` for anything else, cached in memory or in
`cache` files). Each process reads its own shard (`jax.process_index()` of `jax.process_count()` by
default), shuffles with a fixed seed, optionally augments (flips, small shifts, stateless and seeded so
runs repeat) and yields NumPy dicts {'image', 'label'}. TensorFlow is imported lazily and hidden from
GPUs so it never takes accelerator memory from JAX. `device_prefetch` puts batches on devices ahead of
use, `stack_steps` groups k batches for a jitted multi-step loop. Patches (tiles, defect crops) are cut
by `load_image_folder(..., patches=...)`; feed the resulting `ImageSet` here.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from deepsmote_jax.data import folder, image_io
from deepsmote_jax.data.file_images import decoder_fn, import_tf, tf_decodable


@dataclasses.dataclass(frozen=True)
class Augment:
  """Random flips and shifts of up to `max_shift` pixels (zero fill), seeded per example."""

  flip_lr: bool = True
  flip_ud: bool = False
  max_shift: int = 0


def shard_indices(n: int, process_index: int, process_count: int) -> np.ndarray:
  """Indices of the examples process `process_index` reads: every process_count-th, disjoint, covering."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return np.arange(process_index, n, process_count)


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  return int(process_index), int(process_count)


def _decode_files(
  tf, paths: Sequence[str], labels: np.ndarray, *, image_size: int, channels: int, resize: str, decoder: str
):
  """Dataset of (uint8 image, label) decoded from `paths`."""
  decode = decoder_fn(tf, image_size, channels, resize, decoder)
  fast = tf_decodable(paths, decoder, resize)
  ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths, dtype=str), labels.astype(np.int32), fast))
  return ds.map(lambda p, label, f: (decode(p, f), label), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _augment_fn(tf, aug: Augment, seed: int):
  def fn(i, image, label):
    s = tf.stack([tf.cast(seed, tf.int64), i])
    if aug.flip_lr:
      image = tf.image.stateless_random_flip_left_right(image, seed=s)
    if aug.flip_ud:
      image = tf.image.stateless_random_flip_up_down(image, seed=s + 1)
    if aug.max_shift > 0:
      shape = tf.shape(image)
      m = aug.max_shift
      padded = tf.pad(image, [[m, m], [m, m], [0, 0]])
      image = tf.image.stateless_random_crop(padded, size=shape, seed=s + 2)
    return image, label

  return fn


def make_dataset(
  source: folder.ImageSet | tuple[Sequence[str], Sequence[int]],
  *,
  batch_size: int,
  seed: int = 0,
  shuffle: bool = True,
  repeat: bool | int = True,
  drop_remainder: bool = True,
  augment: Augment | None = None,
  as_float: bool = False,
  process_index: int | None = None,
  process_count: int | None = None,
  image_size: int | None = None,
  channels: int | None = None,
  resize: str = "resize",
  root: str | os.PathLike | None = None,
  cache: bool | str = True,
  decoder: str = "tf",
  on_error: str = "raise",
  shuffle_buffer: int | None = None,
):
  """A `tf.data.Dataset` of {'image': (B, H, W, C) uint8 or float32 in [-1, 1], 'label': (B,) int32}.

  Args:
    source: an `ImageSet`, or (files, labels) with files relative to `root` (then `image_size` and
      `channels` are required).
    batch_size: per-process batch size.
    seed: shuffle and augmentation seed (the same seed gives the same batches).
    shuffle: shuffle (each epoch differently, reproducibly).
    repeat: True for endless, an int for that many epochs, False for one.
    drop_remainder: static batch shapes (needed by jit).
    augment: optional `Augment`.
    as_float: images as float32 in [-1, 1] (x / 127.5 - 1) instead of uint8.
    process_index, process_count: this process's shard (default from JAX).
    cache: files only: True caches decoded images in memory, a str caches them in that file prefix
      (`tf.data.Dataset.cache(filename)`), False decodes every epoch.
    decoder: files only: 'tf' (tf.io for PNG/JPEG, Pillow for other formats) or 'pillow' (all Pillow,
      bit-identical to `load_image_folder`). 'tf' uses Pillow too unless resize == 'resize'.
    on_error: files only: 'raise' or 'skip' (undecodable files are dropped by `ignore_errors`).
    shuffle_buffer: default: the whole shard (a full shuffle).
  """
  tf = import_tf()
  pidx, pcount = _process(process_index, process_count)
  if isinstance(source, folder.ImageSet):
    idx = shard_indices(len(source), pidx, pcount)
    ds = tf.data.Dataset.from_tensor_slices((source.images[idx], source.labels[idx]))
    n = len(idx)
  else:
    ds, n = _file_dataset(tf, source, pidx, pcount, image_size, channels, resize, root, cache, decoder, on_error)
  if n == 0:
    raise ValueError(f"process {pidx} of {pcount} has no examples")
  if shuffle:
    ds = ds.shuffle(shuffle_buffer or n, seed=seed, reshuffle_each_iteration=True)
  if repeat is True:
    ds = ds.repeat()
  elif repeat and repeat > 1:
    ds = ds.repeat(int(repeat))
  if augment is not None:
    ds = ds.enumerate().map(
      lambda i, ex: _augment_fn(tf, augment, seed)(i, *ex), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)

  def to_dict(image, label):
    if as_float:
      image = tf.cast(image, tf.float32) / 127.5 - 1.0
    return {"image": image, "label": label}

  ds = ds.map(to_dict, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _file_dataset(tf, source, pidx, pcount, image_size, channels, resize, root, cache, decoder, on_error):
  """(decoded (image, label) dataset of this process's shard of (files, labels), its length)."""
  files, labels = source
  if image_size is None or channels is None:
    raise ValueError("a file list needs image_size and channels")
  image_io.check_settings(image_size, channels, resize, on_error)
  if decoder not in ("tf", "pillow"):
    raise ValueError(f"decoder must be 'tf' or 'pillow', got {decoder!r}")
  labels = np.asarray(labels, np.int32)
  if len(files) != len(labels):
    raise ValueError(f"{len(files)} files but {len(labels)} labels")
  idx = shard_indices(len(files), pidx, pcount)
  paths = [os.path.join(os.fspath(root), files[i]) if root is not None else files[i] for i in idx]
  ds = _decode_files(tf, paths, labels[idx], image_size=image_size, channels=channels, resize=resize, decoder=decoder)
  if on_error == "skip":
    ds = ds.ignore_errors()
  if cache:
    ds = ds.cache(cache if isinstance(cache, str) else "")
  return ds, len(idx)


def numpy_batches(source, **kwargs) -> Iterator[dict[str, np.ndarray]]:
  """`make_dataset(source, **kwargs)` as an iterator of NumPy dicts."""
  return make_dataset(source, **kwargs).as_numpy_iterator()


def stack_steps(iterator: Iterable[dict[str, np.ndarray]], k: int) -> Iterator[dict[str, np.ndarray]]:
  """Groups of k batches stacked to (k, B, ...) per key, for a jitted k-step loop; a short tail is dropped."""
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  group = []
  for batch in iterator:
    group.append(batch)
    if len(group) == k:
      yield {key: np.stack([b[key] for b in group]) for key in group[0]}
      group = []


_END = object()


def device_prefetch(iterator: Iterable[Any], sharding: Any = None, size: int = 2) -> Iterator[Any]:
  """Yield the batches of `iterator` already `jax.device_put` with `sharding`, `size` batches ahead.

  A background thread does the host-to-device copies while the caller computes; its errors are re-raised
  in the caller. Closing the generator (or dropping it) stops the thread.
  """
  if size < 1:
    raise ValueError(f"size must be >= 1, got {size}")
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def producer():
    try:
      for batch in iterator:
        if not put(jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), batch)):
          return
      put(_END)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
      put(e)

  thread = threading.Thread(target=producer, name="device_prefetch", daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is _END:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
