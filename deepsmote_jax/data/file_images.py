"""Images that stay on disk until read: `FileImages`, the streamed stand-in for a decoded uint8 array.

A `FileImages` is a list of image files at one size and channel count that behaves like the (N, H, W, C)
uint8 array they decode to -- `len`, `shape`, `dtype`, indexing by int / slice / index array decodes just
those images, `np.asarray` decodes them all -- so an `ImageSet` can hold one instead of pixels
(`config.data.stream`). `take(indices)` is the lazy subset. For training it is a `train.feed.ImageSource`:
`stream(reads, first, last)` is a tf.data pipeline that decodes each step's images in parallel, in order,
prefetched while the device trains. With decoder 'pillow' (the default) every image is bit-identical to
`load_image_folder`'s, so a streamed run equals an in-memory one.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np

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
    return image_io.decode_image(p, image_size, channels, resize)

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
  ):
    image_io.check_settings(image_size, channels, resize, "raise")
    if decoder not in DECODERS:
      raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    self.files = list(files)
    self.root = None if root is None else os.fspath(root)
    self.paths = [os.path.join(self.root, f) if self.root is not None else f for f in self.files]
    self.image_shape = (int(image_size), int(image_size), int(channels))
    self.resize, self.decoder, self.prefetch_steps = resize, decoder, prefetch_steps

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
    return FileImages([self.paths[i] for i in idx], root=None, **self.settings(), prefetch_steps=self.prefetch_steps)

  def concat(self, other: FileImages) -> FileImages:
    if other.settings() != self.settings():
      raise ValueError(f"concat: image settings differ: {self.settings()} vs {other.settings()}")
    return FileImages(self.paths + other.paths, root=None, **self.settings(), prefetch_steps=self.prefetch_steps)

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

  def __array__(self, dtype=None, copy=None):
    images = self.decode(np.arange(len(self)))
    return images if dtype is None else images.astype(dtype)

  def stream(self, reads, first: int, last: int):
    """uint8 images of `reads(s)` for each step s in [first, last), in order (a `train.feed.ImageSource`)."""
    tf = import_tf()
    per_step = len(reads(first))
    if per_step == 0:
      raise ValueError(f"step {first} reads no image")
    paths = tf.constant(np.asarray(self.paths, dtype=str))
    fast = tf.constant(tf_decodable(self.paths, self.decoder, self.resize))
    decode = decoder_fn(tf, *self.settings_tuple(), self.decoder)
    steps = tf.data.Dataset.from_generator(
      lambda: (np.asarray(reads(s), np.int64) for s in range(first, last)),
      output_signature=tf.TensorSpec((per_step,), tf.int64),
    )
    ds = steps.unbatch().map(
      lambda i: decode(tf.gather(paths, i), tf.gather(fast, i)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return ds.batch(per_step).prefetch(self.prefetch_steps).as_numpy_iterator()
