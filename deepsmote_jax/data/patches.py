"""Model-size patches from large images: regular tiles, or crops centred on each defect of a mask.

Large inspection images shrink their defects to a few pixels when resized whole; the AMOLED paper instead
trains on fixed-size crops around each defect (200×200 dent crops). `DefectCropSpec` does that from a mask
folder laid out like the image folder (magnetic_tile: `masks/<class>/<stem>.png`), `TileSpec` cuts OK
images into tiles. Both work in native pixels and are used by `load_image_folder(..., patches=spec)`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from deepsmote_jax.data import image_io


@dataclasses.dataclass(frozen=True)
class TileSpec:
  """size×size tiles (default: the model's image_size) every `stride` pixels (default: size).

  The last row/column of tiles is aligned to the border so the whole image is covered; an image smaller
  than a tile is padded with black, centred. Tiles whose pixel std is below `min_std` (flat background)
  are dropped.
  """

  size: int | None = None
  stride: int | None = None
  min_std: float = 0.0


@dataclasses.dataclass(frozen=True)
class DefectCropSpec:
  """One size×size crop centred on each connected defect region of the mask `mask_root/<file stem><suffix>`.

  Regions smaller than `min_area` pixels are ignored; a region whose centre lies within `min_distance`
  (default size // 2, Chebyshev) of a larger region's centre shares that crop. Crops are shifted inside
  the image (padded with black when the image is smaller). `no_defect` says what a file without a mask or
  with an empty mask gives: 'center' (one central crop), 'tile' (all tiles) or 'skip' (nothing).
  """

  mask_root: str
  size: int | None = None
  min_area: int = 1
  min_distance: int | None = None
  no_defect: str = "center"
  mask_suffix: str = ".png"


def _pad_to(a: np.ndarray, size: int) -> tuple[np.ndarray, int, int]:
  """Pad (H, W, C) with black, centred, to at least size×size; returns the offsets used."""
  h, w = a.shape[:2]
  ph, pw = max(0, size - h), max(0, size - w)
  if not ph and not pw:
    return a, 0, 0
  top, left = ph // 2, pw // 2
  return np.pad(a, ((top, ph - top), (left, pw - left), (0, 0))), top, left


def _starts(length: int, size: int, stride: int) -> list[int]:
  s = list(range(0, length - size + 1, stride))
  if s[-1] != length - size:
    s.append(length - size)
  return s


def tile_positions(shape: tuple[int, int], size: int, stride: int | None = None) -> list[tuple[int, int]]:
  """Top-left corners (y, x) of tiles covering an image of `shape` (>= size on both sides)."""
  stride = stride or size
  return [(y, x) for y in _starts(shape[0], size, stride) for x in _starts(shape[1], size, stride)]


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
  """Connected components (8-connectivity) of a boolean mask."""
  try:
    from scipy import ndimage  # pylint: disable=g-import-not-at-top

    return ndimage.label(mask, structure=np.ones((3, 3), bool))
  except ImportError:
    pass
  # Fallback: propagate the minimum label among 8-neighbours until stable.
  h, w = mask.shape
  lab = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), 0)
  big = h * w + 1
  while True:
    p = np.pad(np.where(mask, lab, big), 1, constant_values=big)
    nb = np.min([p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    new = np.where(mask, np.minimum(lab, nb), 0)
    if (new == lab).all():
      break
    lab = new
  uniq, inv = np.unique(lab, return_inverse=True)
  return inv.reshape(h, w), len(uniq) - 1


def defect_centres(
  mask: np.ndarray, size: int, min_area: int = 1, min_distance: int | None = None
) -> list[tuple[int, int]]:
  """Centres (y, x) of the defect regions of `mask` (nonzero = defect), largest region first."""
  lab, n = _label(np.asarray(mask) > 0)
  if n == 0:
    return []
  min_distance = size // 2 if min_distance is None else min_distance
  ys, xs = np.nonzero(lab)
  ks = lab[ys, xs]
  area = np.bincount(ks, minlength=n + 1)
  big = np.iinfo(np.int64).max
  y0, x0 = np.full(n + 1, big), np.full(n + 1, big)
  y1, x1 = np.full(n + 1, -1), np.full(n + 1, -1)
  np.minimum.at(y0, ks, ys)
  np.minimum.at(x0, ks, xs)
  np.maximum.at(y1, ks, ys)
  np.maximum.at(x1, ks, xs)
  regions = [
    (int(area[k]), (int(y0[k] + y1[k] + 1) // 2, int(x0[k] + x1[k] + 1) // 2))
    for k in range(1, n + 1)
    if area[k] >= max(1, min_area)
  ]
  regions.sort(key=lambda r: (-r[0], r[1]))
  kept: list[tuple[int, int]] = []
  for _, (cy, cx) in regions:
    if all(max(abs(cy - y), abs(cx - x)) > min_distance for y, x in kept):
      kept.append((cy, cx))
  return kept


def crop_around(shape: tuple[int, int], centre: tuple[int, int], size: int) -> tuple[int, int]:
  """Top-left (y, x) of the size×size crop centred on `centre`, shifted to lie inside `shape`."""
  return tuple(int(min(max(c - size // 2, 0), n - size)) for c, n in zip(centre, shape))


def _mask_path(spec: DefectCropSpec, rel: str) -> str:
  return os.path.join(spec.mask_root, os.path.splitext(rel)[0] + spec.mask_suffix)


def extract_patches(
  image: np.ndarray, spec: TileSpec | DefectCropSpec, *, size: int, mask: np.ndarray | None = None
) -> list[tuple[np.ndarray, str]]:
  """[(size×size×C patch, 'y_x' of its top-left in the original image)] of one (H, W, C) uint8 image."""
  a, top, left = _pad_to(image, size)
  tag = lambda y, x: f"{y - top}_{x - left}"
  if isinstance(spec, DefectCropSpec):
    centres = []
    if mask is not None:
      m = np.pad(mask, ((top, a.shape[0] - mask.shape[0] - top), (left, a.shape[1] - mask.shape[1] - left)))
      centres = defect_centres(m, size, spec.min_area, spec.min_distance)
    if centres:
      pos = [crop_around(a.shape[:2], c, size) for c in centres]
    elif spec.no_defect == "center":
      pos = [crop_around(a.shape[:2], (a.shape[0] // 2, a.shape[1] // 2), size)]
    elif spec.no_defect == "tile":
      pos = tile_positions(a.shape[:2], size)
    elif spec.no_defect == "skip":
      pos = []
    else:
      raise ValueError(f"no_defect must be 'center', 'tile' or 'skip', got {spec.no_defect!r}")
    return [(a[y : y + size, x : x + size], tag(y, x)) for y, x in pos]
  out = []
  for y, x in tile_positions(a.shape[:2], size, spec.stride):
    p = a[y : y + size, x : x + size]
    if spec.min_std <= 0 or p.std() >= spec.min_std:
      out.append((p, tag(y, x)))
  return out


def extract_file_patches(
  root: str,
  rel: str,
  spec: TileSpec | DefectCropSpec,
  *,
  image_size: int,
  channels: int,
  notes: list[str] | None = None,
) -> list[tuple[np.ndarray, str]]:
  """Patches of `root/rel` as image_size×image_size×channels uint8 (resized if spec.size differs).

  An image far smaller than the patch (`image_io.check_not_tiny`) is a `BadImageError`: its patches would
  be mostly black padding. Lossy conversions of the image (not of its mask) are appended to `notes`.
  """
  im = image_io.open_image(os.path.join(root, rel), channels=channels, notes=notes)
  size = spec.size or image_size
  image_io.check_not_tiny(im.size, size)
  image = np.asarray(im, np.uint8).reshape(im.size[1], im.size[0], channels)
  mask = None
  if isinstance(spec, DefectCropSpec):
    path = _mask_path(spec, rel)
    if os.path.exists(path):
      m = image_io.open_image(path, channels=1)
      if m.size != im.size:
        m = m.resize(im.size, Image.Resampling.NEAREST)
      mask = np.asarray(m) > 0
  out = extract_patches(image, spec, size=size, mask=mask)
  if size != image_size:
    out = [
      (
        np.asarray(
          image_io.fit_image(Image.fromarray(p[..., 0] if channels == 1 else p), image_size, "resize")
        ).reshape(image_size, image_size, channels),
        t,
      )
      for p, t in out
    ]
  return out
