"""Images that stay on disk until read: `FileImages`, the streamed stand-in for a decoded uint8 array.

A `FileImages` is a list of image files at one size and channel count that behaves like the (N, H, W, C)
uint8 array they decode to -- `len`, `shape`, `dtype`, indexing by int / slice / index array decodes just
those images, `np.asarray` decodes them all -- so an `ImageSet` can hold one instead of pixels
(`config.data.stream`). `take(indices)` is the lazy subset. For training it is a `train.feed.ImageSource`:
`stream(reads, first, last)` is a tf.data pipeline that decodes each step's images in parallel, in order,
prefetched while the device trains. With decoder 'pillow' (the default) every image is bit-identical to
`load_image_folder`'s, so a streamed run equals an in-memory one.

A stream decodes each image once: its pixels go to a `DecodedCache`, a file of this process on local disk
(`stream_cache`: 'disk' = under $TMPDIR, 'off', or a directory) that later epochs read back instead of decoding
the file again. The cache lives as long as the stream, so it never serves another run's images. Images read
again and again by index (held-out images scored at every evaluation) go through `cached_reads()`, which
keeps such a cache for as long as the reader lives.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging

from deepsmote_jax.data import image_io

_TF_DECODABLE = (".png", ".jpg", ".jpeg")
DECODERS = ("pillow", "tf")


def import_tf():
  """TensorFlow with its GPUs hidden (call before any other TF use in the process)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass  # TF already initialised its devices; nothing more can be done here
  return tf


def _pillow_decoder(image_size: int, channels: int, resize: str):
  def decode(path):
    p = path.decode() if isinstance(path, bytes) else str(path)
    try:
      return image_io.decode_image(p, image_size, channels, resize)
    except image_io.BadImageError as e:
      raise image_io.BadImageError(f"{p}: {e}") from None

  return decode


def decoder_fn(tf, image_size: int, channels: int, resize: str, decoder: str):
  """`decode(path, fast) -> uint8 (H, W, C)` in a tf.data map: tf.io where `fast` (PNG/JPEG with decoder 'tf'
  and plain resizing), else the Pillow code of `load_image_folder` (bit-identical to an in-memory load)."""
  pillow = _pillow_decoder(image_size, channels, resize)

  def by_pillow(path):
    img = tf.numpy_function(pillow, [path], tf.uint8, stateful=False)
    return tf.ensure_shape(img, (image_size, image_size, channels))

  def by_tf(path):
    raw = tf.io.read_file(path)
    img = tf.io.decode_image(raw, channels=channels, dtype=tf.uint8, expand_animations=False)
    img = tf.image.resize(img, (image_size, image_size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)

  def decode(path, fast):
    img = tf.cond(fast, lambda: by_tf(path), lambda: by_pillow(path)) if _use_tf(decoder, resize) else by_pillow(path)
    return tf.ensure_shape(img, (image_size, image_size, channels))

  return decode


def _use_tf(decoder: str, resize: str) -> bool:
  return decoder == "tf" and resize == "resize"


def check_stream_cache(value, name: str = "stream_cache") -> str:
  """`value` as 'disk' | 'off' | an existing directory (booleans: True = 'disk'); else a ValueError naming `name`."""
  if isinstance(value, bool):
    return "disk" if value else "off"
  if isinstance(value, str) and value.lower() in ("disk", "off"):
    return value.lower()
  if isinstance(value, (str, os.PathLike)) and os.fspath(value) and os.path.isdir(value):
    return os.fspath(value)
  raise ValueError(f"{name}={value!r}: choose 'disk' (a file under $TMPDIR), 'off' or an existing directory")


def _close_file(fd: int, path: str | None) -> None:
  os.close(fd)
  if path is not None:
    os.remove(path)


class DecodedCache:
  """Decoded uint8 rows of one stream in a file on local disk (row i at offset i * row bytes).

  The file is this process's own (`mkstemp`) and, on POSIX, unlinked as soon as it is open: it is freed when
  `close` (or the garbage collector, or interpreter exit) closes it, even after a crash, and can never serve
  another run. Rows are read back with `os.pread`, not a memmap, so they stay in the OS page cache instead of
  this process's resident memory. Thread-safe: tf.data calls `read` / `write` from its own threads, and a
  stream closed meanwhile only turns them into misses / no-ops.
  """

  def __init__(self, directory: str, rows: int, image_shape: tuple[int, int, int]):
    self.image_shape = tuple(image_shape)
    self.row_bytes = int(np.prod(self.image_shape))
    fd, self.path = tempfile.mkstemp(prefix="deepsmote-decoded-", suffix=".u8", dir=directory)
    kept = self.path
    if os.name == "posix":
      os.remove(self.path)
      kept = None
    self._fd: int | None = fd
    self._cached = np.zeros(rows, bool)
    self._lock = threading.Lock()
    self._close = weakref.finalize(self, _close_file, fd, kept)

  @classmethod
  def open(cls, setting: str, rows: int, image_shape: tuple[int, int, int]) -> DecodedCache | None:
    """A cache for `rows` images by `check_stream_cache`'s `setting`; None when 'off' or the disk is too full."""
    if setting == "off" or rows == 0:
      return None
    directory = tempfile.gettempdir() if setting == "disk" else setting
    need, free = rows * int(np.prod(image_shape)), shutil.disk_usage(directory).free
    if need > free:
      logging.warning(
        "stream_cache: %d decoded images need %.0f MiB, %s has %.0f MiB free: streaming without the cache",
        rows,
        need / 2**20,
        directory,
        free / 2**20,
      )
      return None
    return cls(directory, rows, image_shape)

  @property
  def closed(self) -> bool:
    return self._fd is None

  def close(self) -> None:
    """Frees the file (idempotent)."""
    with self._lock:
      self._release()

  def _release(self) -> None:  # with the lock held
    self._fd = None
    self._close()

  def cached(self) -> np.ndarray:
    """Which rows are in the file (a copy)."""
    return self._cached.copy()

  def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images of the cached rows of `idx`, zeros elsewhere; which rows of `idx` were not cached)."""
    out = np.zeros((len(idx), *self.image_shape), np.uint8)
    missing = np.ones(len(idx), bool)
    with self._lock:
      if self._fd is None:
        return out, missing
      flat = out.reshape(len(idx), -1)
      for j, i in enumerate(idx):
        if self._cached[i]:
          raw = os.pread(self._fd, self.row_bytes, int(i) * self.row_bytes)
          if len(raw) == self.row_bytes:
            flat[j] = np.frombuffer(raw, np.uint8)
            missing[j] = False
    return out, missing

  def write(self, idx: np.ndarray, new: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Stores the rows of `images` where `new` is set (each row once); returns `images`. A failed write (disk
    full) closes the cache: the stream goes on decoding."""
    with self._lock:
      try:
        for j in np.flatnonzero(new):
          i = int(idx[j])
          if self._fd is not None and not self._cached[i]:
            os.pwrite(self._fd, images[j].tobytes(), i * self.row_bytes)
            self._cached[i] = True  # only once written: a reader never sees a partial row
      except OSError as e:
        logging.warning("stream_cache: writing the decoded-image cache failed (%s): streaming without it", e)
        self._release()
    return images


_PYTHON_ERROR = re.compile(r"^(?:[A-Z_]+: )?[\w.]*(?:Error|Exception): (.+)$")  # [TF status: ]Type: message


def _stream_error(e: BaseException) -> image_io.BadImageError:
  """A tf.data error of a stream as the one-line error of the file behind it: a decoder's Python error (which
  names the file) travels inside TensorFlow's message, under its traceback."""
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  found = next((m.group(1) for m in map(_PYTHON_ERROR.match, lines) if m), None)
  return image_io.BadImageError(found or f"a streamed image could not be decoded: {lines[0] if lines else e!r}")


class _Stream:
  """The numpy iterator of a stream: decoding errors as one-line `BadImageError`s (not TensorFlow's), and
  closing it (or dropping it) frees its cache."""

  def __init__(self, tf, iterator: Iterator[np.ndarray], cache: DecodedCache | None):
    self._iterator, self.cache, self._op_error = iterator, cache, tf.errors.OpError
    self._finalizer = weakref.finalize(self, cache.close) if cache is not None else None

  def __iter__(self):
    return self

  def __next__(self) -> np.ndarray:
    try:
      return next(self._iterator)
    except self._op_error as e:
      error = _stream_error(e)
    # Raised outside the handler, so it keeps no reference to TensorFlow's error: that error's traceback holds
    # the tf.data iterator, which would then live until interpreter exit and deadlock there with its threads.
    self.close()
    raise error

  def close(self) -> None:
    self._iterator = iter(())
    if self._finalizer is not None:
      self._finalizer()


def tf_decodable(paths: Sequence[str], decoder: str, resize: str) -> np.ndarray:
  """Which of `paths` `decoder_fn` reads with tf.io (the rest with Pillow)."""
  use_tf = _use_tf(decoder, resize)
  return np.array([use_tf and os.path.splitext(p)[1].lower() in _TF_DECODABLE for p in paths], bool)


class FileImages:
  """The images of `files` (relative to `root`) as a lazily decoded uint8 (N, size, size, channels) array."""

  dtype = np.dtype(np.uint8)
  ndim = 4

  def __init__(
    self,
    files: Sequence[str],
    *,
    root: str | os.PathLike | None,
    image_size: int,
    channels: int,
    resize: str = "resize",
    decoder: str = "pillow",
    prefetch_steps: int = 4,
    stream_cache: str = "disk",
  ):
    image_io.check_settings(image_size, channels, resize, "raise")
    if decoder not in DECODERS:
      raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    self.files = list(files)
    self.root = None if root is None else os.fspath(root)
    self.paths = [os.path.join(self.root, f) if self.root is not None else f for f in self.files]
    self.image_shape = (int(image_size), int(image_size), int(channels))
    self.resize, self.decoder, self.prefetch_steps = resize, decoder, prefetch_steps
    # Where `stream` keeps decoded images (`check_stream_cache`): not a setting, the images are the same.
    self.stream_cache = check_stream_cache(stream_cache)

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self), *self.image_shape)

  def __repr__(self) -> str:
    return f"FileImages({len(self)} files under {self.root!r}, {self.image_shape}, resize={self.resize!r})"

  def settings(self) -> dict:
    """Everything but the file list (to rebuild the same images from other files)."""
    size, _, channels = self.image_shape
    return dict(image_size=size, channels=channels, resize=self.resize, decoder=self.decoder)

  def fingerprint(self) -> str:
    record = {"files": self.files, "root": self.root, **self.settings()}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]

  def take(self, indices) -> FileImages:
    """The lazy subset at `indices` (nothing decoded)."""
    idx = np.asarray(indices, np.int64).reshape(-1)
    return FileImages([self.paths[i] for i in idx], root=None, **self.settings(), **self._reading())

  def concat(self, other: FileImages) -> FileImages:
    if other.settings() != self.settings():
      raise ValueError(f"concat: image settings differ: {self.settings()} vs {other.settings()}")
    return FileImages(self.paths + other.paths, root=None, **self.settings(), **self._reading())

  def _reading(self) -> dict:
    """How images are read (not what they are: outside `settings` and the fingerprint)."""
    return dict(prefetch_steps=self.prefetch_steps, stream_cache=self.stream_cache)

  def decode(self, indices) -> np.ndarray:
    """uint8 (len(indices), H, W, C) of the images at `indices`, decoded by a thread pool (Pillow)."""
    idx = np.asarray(indices, np.int64).reshape(-1)
    out = np.empty((len(idx), *self.image_shape), np.uint8)
    if not len(idx):
      return out
    decode = _pillow_decoder(*self.settings_tuple())
    workers = min(len(idx), max(1, (os.cpu_count() or 1)), 16)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      for j, img in enumerate(pool.map(lambda i: decode(self.paths[i]), idx)):
        out[j] = img
    return out

  def settings_tuple(self) -> tuple[int, int, str]:
    size, _, channels = self.image_shape
    return size, channels, self.resize

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return self.decode([key])[0]
    if isinstance(key, slice):
      return self.decode(np.arange(len(self))[key])
    idx = np.asarray(key)
    if idx.dtype == bool:
      idx = np.flatnonzero(idx)
    return self.decode(idx)

  def cached_reads(self) -> CachedReads:
    """Indexing that decodes each image once and reads it back from a `DecodedCache` after (by
    `stream_cache`), for as long as the returned reader lives: for images scored again and again."""
    return CachedReads(self)

  def __array__(self, dtype=None, copy=None):
    images = self.decode(np.arange(len(self)))
    return images if dtype is None else images.astype(dtype)

  def stream(self, reads, first: int, last: int):
    """uint8 images of `reads(s)` for each step s in [first, last), in order (a `train.feed.ImageSource`).

    `reads` is called in step order from one tf.data thread; images are decoded in a parallel tf.data map,
    ahead of the step. With a `DecodedCache` (`stream_cache`) the call of `reads` also reads the step's cached
    rows, and only the others are decoded (then cached), a step per map call: per-image tf.data elements cost
    more than reading a cached image (CPU per step of 64 cached images, 64x64: 5.4 ms per image element, 1.5 ms
    per step with the indices from a generator, 1.0 ms as here). Closing the returned iterator (`close`, or
    dropping it) frees the cache."""
    tf = import_tf()
    per_step = len(reads(first))
    if per_step == 0:
      raise ValueError(f"step {first} reads no image")
    paths = tf.constant(np.asarray(self.paths, dtype=str))
    fast = tf.constant(tf_decodable(self.paths, self.decoder, self.resize))
    decode_path = decoder_fn(tf, *self.settings_tuple(), self.decoder)

    def decode(i):  # the image at index `i`
      return decode_path(tf.gather(paths, i), tf.gather(fast, i))

    parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    cache = DecodedCache.open(self.stream_cache, len(self), self.image_shape)
    shape = (per_step, *self.image_shape)

    def step_reads(s):  # called in step order, from one tf.data thread (the map below is sequential)
      i = np.asarray(reads(int(s)), np.int64)
      return (i, *cache.read(i)) if cache is not None else i

    steps = tf.data.Dataset.range(first, last)
    if cache is None:
      steps = steps.map(lambda s: tf.ensure_shape(tf.numpy_function(step_reads, [s], tf.int64), (per_step,)))
      ds = steps.unbatch().map(decode, **parallel)
      return _Stream(tf, ds.batch(per_step).prefetch(self.prefetch_steps).as_numpy_iterator(), None)

    def read(s):
      # The step's indices and its cached rows, in one call.
      i, images, missing = tf.numpy_function(step_reads, [s], (tf.int64, tf.uint8, tf.bool), stateful=True)
      return tf.ensure_shape(i, (per_step,)), tf.ensure_shape(images, shape), tf.ensure_shape(missing, (per_step,))

    def decode_row(row):
      i, image, missing = row
      return tf.cond(missing, lambda: decode(i), lambda: image)

    def fill(i, images, missing):
      # A step whose rows are all cached passes as read; a step with misses decodes just those.
      def decode_missing():
        out = tf.map_fn(decode_row, (i, images, missing), fn_output_signature=tf.uint8)
        return tf.ensure_shape(tf.numpy_function(cache.write, [i, missing, out], tf.uint8, stateful=True), shape)

      return tf.cond(tf.reduce_any(missing), decode_missing, lambda: images)

    ds = steps.map(read).map(fill, **parallel).prefetch(self.prefetch_steps)
    return _Stream(tf, ds.as_numpy_iterator(), cache)


class CachedReads:
  """`images[indices]` (an index array) of a `FileImages`, each image decoded on its first read and read back
  from a `DecodedCache` after; without a cache (`stream_cache='off'`, a full disk) every read decodes. `close`
  (or dropping the reader) frees the cache."""

  def __init__(self, images: FileImages):
    self.images = images
    self.cache = DecodedCache.open(images.stream_cache, len(images), images.image_shape)
    self._finalizer = weakref.finalize(self, self.cache.close) if self.cache is not None else None

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, indices) -> np.ndarray:
    idx = np.asarray(indices, np.int64).reshape(-1)
    if self.cache is None:
      return self.images.decode(idx)
    out, missing = self.cache.read(idx)
    if missing.any():
      rows, where = np.unique(idx[missing], return_inverse=True)  # a row asked twice is decoded once
      out[missing] = self.images.decode(rows)[where]
      self.cache.write(idx, missing, out)
    return out

  def close(self) -> None:
    if self._finalizer is not None:
      self._finalizer()
