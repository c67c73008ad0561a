"""The DeepSMOTE paper's benchmark datasets from tensorflow-datasets as `ImageSet`s.

mnist, fashion_mnist, cifar10, svhn_cropped, and celeb_a reduced to the five hair-colour classes. No
network at run time: a dataset that is not prepared under TFDS's data_dir gives a FileNotFoundError
saying where TFDS looked and how to prepare it elsewhere. TensorFlow is imported only when called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from deepsmote_jax.data import folder, image_io

SUPPORTED = ("mnist", "fashion_mnist", "cifar10", "svhn_cropped", "celeb_a")
# CelebA attribute per class, in frequency order (the order of protocols.CELEBA_HAIR_COUNTS).
CELEBA_HAIR_CLASSES = ("black", "brown", "blond", "gray", "bald")
CELEBA_HAIR_ATTRIBUTES = ("Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair", "Bald")
_BATCH = 1024


def _import_tfds():
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("TFDS datasets need tensorflow and tensorflow-datasets: pip install deepsmote_jax[data]") from e
  try:
    tf.config.set_visible_devices([], "GPU")  # keep TF off the accelerator JAX uses
  except RuntimeError:
    pass  # already initialised
  return tf, tfds


def default_data_dir() -> str:
  """Where TFDS looks when data_dir is None ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def _not_prepared(name: str, data_dir: str | None, err: Exception) -> FileNotFoundError:
  where = data_dir or default_data_dir()
  return FileNotFoundError(
    f"TFDS dataset {name!r} is not prepared under data_dir={where!r} ({err}). On a machine with network, run "
    f"`python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{where}')"
    f'.download_and_prepare()"` (or `tfds build {name} --data_dir {where}`) and copy {where}/{name} here; '
    "or call load_tfds(..., download=True) where network is available. celeb_a needs a manual download "
    "on some TFDS versions."
  )


def _convert(batch: np.ndarray, image_size: int | None, channels: int | None, resize: str) -> np.ndarray:
  """uint8 (B, H, W, C) to the requested channels/size with the same Pillow code as image folders."""
  b, h, w, c = batch.shape
  channels = channels or c
  if (image_size in (None, h) and h == w) and channels == c:
    return batch
  size = image_size or max(h, w)

  def one(a):
    im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    im = image_io.to_8bit(im, channels)
    return np.asarray(image_io.fit_image(im, size, resize)).reshape(size, size, channels)

  res = folder.parallel_map(one, list(batch))
  for _, err in res:
    if err is not None:
      raise err
  return np.stack([r for r, _ in res])


def _select_rows(labels, ok, caps, taken: np.ndarray, room: int | None) -> list[int]:
  """Rows of one batch to keep: usable (`ok`), under their class's cap (`taken` counts them), at most `room`."""
  keep = []
  for i in np.flatnonzero(ok):
    c = int(labels[i])
    if caps is not None and taken[c] >= caps[c]:
      continue
    if room is not None and len(keep) >= room:
      break
    taken[c] += 1
    keep.append(i)
  return keep


def load_tfds(
  name: str,
  *,
  split: str = "train",
  image_size: int | None = None,
  channels: int | None = None,
  resize: str = "resize",
  data_dir: str | None = None,
  download: bool = False,
  max_examples: int | None = None,
  max_per_class: int | Sequence[int] | None = None,
) -> folder.ImageSet:
  """Dataset `name` (see SUPPORTED) split `split` as an `ImageSet` (native size/channels by default).

  Args:
    name: 'mnist', 'fashion_mnist', 'cifar10', 'svhn_cropped' or 'celeb_a' (five hair classes; images
      with none or several of the hair attributes are left out).
    split: a TFDS split string, e.g. 'train', 'test', 'train[:10%]'.
    image_size, channels, resize: as in `load_image_folder` (None keeps the native value).
    data_dir: TFDS data folder (None: TFDS's default).
    download: allow TFDS to download and prepare (needs network).
    max_examples: stop after this many kept examples.
    max_per_class: stop collecting a class at this count (int or one per class), e.g. the paper counts:
      CelebA is read only as far as needed instead of decoding all 160k faces.

  Returns:
    ImageSet; files '<name>/<split>/<index>' (index of the example in the split's read order).
  """
  if name not in SUPPORTED:
    raise ValueError(f"unsupported TFDS dataset {name!r}; supported: {SUPPORTED}")
  if channels is not None and channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels!r}")
  tf, tfds = _import_tfds()
  try:
    ds, info = tfds.load(name, split=split, data_dir=data_dir, download=download, with_info=True, shuffle_files=False)
  except AssertionError as e:  # TFDS's "could not find data in <data_dir>"
    raise _not_prepared(name, data_dir, e) from None
  if name == "celeb_a":
    class_names = list(CELEBA_HAIR_CLASSES)

    def select(ex):
      hair = tf.stack([tf.cast(ex["attributes"][a], tf.int32) for a in CELEBA_HAIR_ATTRIBUTES])
      return {"image": ex["image"], "label": tf.cast(tf.argmax(hair), tf.int32), "ok": tf.reduce_sum(hair) == 1}
  else:
    class_names = list(info.features["label"].names)

    def select(ex):
      return {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32), "ok": tf.constant(True)}

  ds = ds.map(select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(_BATCH)
  caps = None
  if max_per_class is not None:
    caps = np.broadcast_to(np.asarray(max_per_class, np.int64), (len(class_names),)).copy()
  taken = np.zeros(len(class_names), np.int64)
  images, labels, files = [], [], []
  offset = 0
  for batch in tfds.as_numpy(ds):
    room = None if max_examples is None else max_examples - len(files)
    keep = _select_rows(batch["label"], batch["ok"], caps, taken, room)
    if keep:
      imgs = batch["image"][keep]
      if imgs.ndim == 3:
        imgs = imgs[..., None]
      images.append(_convert(imgs.astype(np.uint8, copy=False), image_size, channels, resize))
      labels.append(batch["label"][keep])
      files.extend(f"{name}/{split}/{offset + i}" for i in keep)
    offset += len(batch["label"])
    if (max_examples is not None and len(files) >= max_examples) or (caps is not None and (taken >= caps).all()):
      break
  if not images:
    raise ValueError(f"TFDS {name!r} split {split!r}: no examples selected")
  return folder.ImageSet(
    images=np.concatenate(images), labels=np.concatenate(labels).astype(np.int32), class_names=class_names, files=files
  )
