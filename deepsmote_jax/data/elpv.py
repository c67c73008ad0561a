"""ELPV solar-cell images (the `elpv-dataset` package) as an OK/NG `ImageSet`.

2,624 electroluminescence images, 300×300 8-bit gray, each with a defect probability (0, 1/3, 2/3, 1)
and a cell type ('mono'/'poly'). Probability 0 is OK, 1 is NG; the uncertain 1/3 and 2/3 are dropped by
default or mapped to OK / NG. Decoding the package takes several seconds, so the resized images are kept
in memory (keyed by size, channels and policy) and optionally in an npz file under `cache_dir`.
"""

from __future__ import annotations

import functools
import os
import tempfile

import numpy as np
from PIL import Image

from deepsmote_jax.data import folder, image_io

CLASS_NAMES = ["OK", "NG"]
NUM_IMAGES = 2624
_CACHE_VERSION = 1


def _decode_package() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  try:
    from elpv_dataset.utils import load_dataset  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("ELPV needs the elpv-dataset package: pip install elpv-dataset (or deepsmote_jax[data])") from e
  images, probs, types = load_dataset()
  return np.asarray(images, np.uint8), np.asarray(probs, np.float32), np.asarray(types).astype(str)


def _resize_all(images: np.ndarray, image_size: int, channels: int, resize: str) -> np.ndarray:
  if images.shape[1:] == (image_size, image_size) and channels == 1:
    return images[..., None]

  def one(a):
    im = image_io.to_8bit(Image.fromarray(a), channels)
    return np.asarray(image_io.fit_image(im, image_size, resize)).reshape(image_size, image_size, channels)

  out = np.empty((len(images), image_size, image_size, channels), np.uint8)
  for i, (arr, err) in enumerate(folder.parallel_map(one, list(images))):
    if err is not None:
      raise err
    out[i] = arr
  return out


@functools.lru_cache(maxsize=4)
def _all_resized(
  image_size: int, channels: int, resize: str, cache_dir: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(images, probabilities, cell types) of all 2,624 cells, resized; memory + optional disk cache."""
  path = None
  if cache_dir:
    path = os.path.join(cache_dir, f"elpv_v{_CACHE_VERSION}_{image_size}_{channels}_{resize}.npz")
    if os.path.exists(path):
      try:
        with np.load(path, allow_pickle=False) as z:
          return z["images"], z["probs"], z["types"].astype(str)
      except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
        pass
  raw, probs, types = _decode_package()
  images = _resize_all(raw, image_size, channels, resize)
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=cache_dir)
    os.close(fd)
    np.savez(tmp, images=images, probs=probs, types=types)
    os.replace(tmp, path)  # atomic: concurrent loaders never see half a file
  for a in (images, probs, types):
    a.setflags(write=False)  # shared by every caller of the memory cache
  return images, probs, types


def load_elpv(
  image_size: int = 300,
  channels: int = 1,
  include_intermediate: bool | str = False,
  *,
  resize: str = "resize",
  cache_dir: str | os.PathLike | None = None,
  cell_type: str | None = None,
) -> folder.ImageSet:
  """ELPV as an `ImageSet` with classes ['OK', 'NG'].

  Args:
    image_size: output side (the originals are 300×300).
    channels: 1 or 3 (gray replicated).
    include_intermediate: False drops probabilities 1/3 and 2/3; 'ok' / 'ng' labels them OK / NG.
    resize: policy of `image_io.fit_image` (irrelevant for the square originals except 'center_crop').
    cache_dir: folder for an npz of the resized images (e.g. '~/.cache/deepsmote_jax'); None: memory only.
    cell_type: keep only 'mono' or 'poly' cells.

  Returns:
    ImageSet; files 'elpv/<index>.png' (index into the package's label list, 4 digits), attrs
    'defect_probability' (float32) and 'cell_type' (str).
  """
  image_io.check_settings(image_size, channels, resize, "raise")
  if include_intermediate not in (False, "ok", "ng"):
    raise ValueError(f"include_intermediate must be False, 'ok' or 'ng', got {include_intermediate!r}")
  if cell_type not in (None, "mono", "poly"):
    raise ValueError(f"cell_type must be None, 'mono' or 'poly', got {cell_type!r}")
  cache = os.path.expanduser(os.fspath(cache_dir)) if cache_dir is not None else None
  # ELPV is gray: one cached copy (channels=1) serves both channel counts.
  images, probs, types = _all_resized(int(image_size), 1, resize, cache)
  ok = np.isclose(probs, 0.0)
  ng = np.isclose(probs, 1.0)
  mid = ~(ok | ng)
  if include_intermediate == "ok":
    ok |= mid
  elif include_intermediate == "ng":
    ng |= mid
  keep = ok | ng
  if cell_type is not None:
    keep &= types == cell_type
  idx = np.flatnonzero(keep)
  out = images[idx]
  if channels == 3:
    out = np.repeat(out, 3, axis=-1)
  return folder.ImageSet(
    images=out,
    labels=ng[idx].astype(np.int32),
    class_names=list(CLASS_NAMES),
    files=[f"elpv/{i:04d}.png" for i in idx],
    attrs={"defect_probability": probs[idx], "cell_type": types[idx]},
  )
