"""Large images seen at their own scale: native-resolution tiles, the bags multiple-instance training needs,
and per-image scores aggregated from tile scores.

A hairline crack in a 500x1250 part vanishes when the whole image is resized to 64x64. With
`config.data.patches.mode='tiles'` every image is cut into size x size tiles of native pixels (resized to
the model's size only when the tile size differs from it); `'defect_crops'` instead cuts training NG images
with a defect mask into crops centred on each defect region (`patches.DefectCropSpec`). Validation and test
images are always tiled, and every decision is made per image from its tiles' scores (`aggregate`).

Weak labels (`training_bags`): an OK image's tiles are all OK, so each is a one-tile OK bag; an NG image
with a mask gives its mask-overlapping tiles (or defect crops) as one-tile NG bags, and its other tiles are
not used (a tile beside a faint, partly annotated defect is not a safe OK); an NG image without a mask is
one bag of all its tiles, of which at least one shows the defect: multiple-instance learning scores the bag
by the mean of its top-k tiles.

Tiles larger than an image are bad input (an image is never padded: black borders only on the small images
could teach the classifier the image size instead of the defect). Masks must have their image's size.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from deepsmote_jax.data import image_io, patches
from deepsmote_jax.data.folder import ImageSet, parallel_map
from deepsmote_jax.data.image_io import BadImageError

MODES = ("none", "tiles", "defect_crops")
MIN_TILE = 8  # pixels: smaller tiles hold no texture a convolution can use


@dataclasses.dataclass(frozen=True)
class TileSettings:
  """`config.data.patches`: how images become tiles and how tile scores become an image score.

  mode: 'none' (whole images resized to the model's size, as without this section), 'tiles' or
    'defect_crops' (see the module docstring).
  size: tile side in native pixels; 0 = the model's image size (tiles then need no resize).
  stride: pixels between tiles; 0 = size (no overlap). The last row and column are aligned to the border.
  min_std: tiles whose pixel standard deviation is below this are dropped (flat background); an image
    keeps at least its busiest tile, and defect tiles are never dropped.
  top_k: an image's NG score is the mean of its k highest tile NG scores (1 = the maximum); MIL bags are
    pooled the same way.
  mask_root: folder of defect masks laid out like the images (`<mask_root>/<class>/<stem><mask_suffix>`,
    nonzero = defect), used for training NG images; '' = none.
  ok_tiles_per_image: at most this many tiles (drawn at random) of each training OK image; 0 = all. Any
    subset of an OK image's tiles is still all OK, so this only trades variety for time.
  """

  mode: str = "none"
  size: int = 0
  stride: int = 0
  min_std: float = 0.0
  top_k: int = 1
  mask_root: str = ""
  mask_suffix: str = ".png"
  ok_tiles_per_image: int = 0

  def validate(self) -> None:
    """Raises ValueError for a bad setting; each message starts with the field's name."""
    if self.mode not in MODES:
      raise ValueError(f"mode={self.mode!r}: choose one of {MODES}")
    for name in ("size", "stride"):
      v = int(getattr(self, name))
      if v != 0 and v < MIN_TILE:
        raise ValueError(f"{name}={v}: tiles need at least {MIN_TILE} px (0 = the default)")
    if int(self.top_k) < 1:
      raise ValueError(f"top_k={self.top_k}: must be >= 1")
    if float(self.min_std) < 0 or int(self.ok_tiles_per_image) < 0:
      raise ValueError(f"min_std and ok_tiles_per_image must be >= 0, got {self.min_std}, {self.ok_tiles_per_image}")
    if self.mode == "defect_crops" and not self.mask_root:
      raise ValueError("mask_root is empty: mode='defect_crops' cuts crops around the defects of masks")
    if self.mask_root and not os.path.isdir(self.mask_root):
      raise ValueError(f"mask_root={self.mask_root!r} is not a folder")

  def tile_size(self, image_size: int) -> int:
    return int(self.size) or int(image_size)

  def tile_stride(self, image_size: int) -> int:
    return int(self.stride) or self.tile_size(image_size)


@dataclasses.dataclass
class TiledSplit:
  """One split's tiles and the images they come from.

  tiles: every tile as an `ImageSet` (files '<image file>#<y>_<x>', labels = the image's label).
  bag: (n_tiles,) index of each tile's image in `image_files`.
  instance: (n_tiles,) 1 where the tile is a known NG instance (it overlaps its image's mask, or is a
    defect crop), else 0.
  image_files, image_labels: the split's images, in order.
  """

  tiles: ImageSet
  bag: np.ndarray
  instance: np.ndarray
  image_files: list[str]
  image_labels: np.ndarray

  def __post_init__(self):
    self.bag = np.asarray(self.bag, np.int32).reshape(-1)
    self.instance = np.asarray(self.instance, np.int8).reshape(-1)
    self.image_labels = np.asarray(self.image_labels, np.int32).reshape(-1)
    self.image_files = list(self.image_files)
    n = len(self.tiles)
    if len(self.bag) != n or len(self.instance) != n:
      raise ValueError(f"TiledSplit: {n} tiles, {len(self.bag)} bag indices, {len(self.instance)} instance flags")
    if len(self.image_files) != len(self.image_labels):
      raise ValueError(f"TiledSplit: {len(self.image_files)} image files, {len(self.image_labels)} labels")
    missing = np.setdiff1d(np.arange(len(self.image_files)), self.bag)
    if len(missing):
      raise ValueError(f"TiledSplit: image {self.image_files[int(missing[0])]!r} has no tile")

  def image_counts(self) -> dict[str, int]:
    per = np.bincount(self.image_labels, minlength=len(self.tiles.class_names))
    return {c: int(n) for c, n in zip(self.tiles.class_names, per)}


@dataclasses.dataclass
class Bags:
  """Training bags of tile indices, padded to one width: index (n, T), valid (n, T), label (n,)."""

  index: np.ndarray
  valid: np.ndarray
  label: np.ndarray

  @staticmethod
  def from_lists(members: Sequence[Sequence[int]], labels: Sequence[int]) -> Bags:
    width = max([len(m) for m in members] + [1])
    index = np.zeros((len(members), width), np.int32)
    valid = np.zeros((len(members), width), bool)
    for i, m in enumerate(members):
      index[i, : len(m)], valid[i, : len(m)] = m, True
    return Bags(index, valid, np.asarray(labels, np.int32).reshape(-1))

  def concat(self, other: Bags) -> Bags:
    width = max(self.index.shape[1], other.index.shape[1])
    pad = lambda a, v: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=v)
    return Bags(
      np.concatenate([pad(self.index, 0), pad(other.index, 0)]),
      np.concatenate([pad(self.valid, False), pad(other.valid, False)]),
      np.concatenate([self.label, other.label]),
    )

  def __len__(self) -> int:
    return len(self.label)


def singles(first_tile: int, labels: np.ndarray) -> Bags:
  """One-tile bags of tiles first_tile, first_tile + 1, ... (e.g. synthetic tiles appended to a set)."""
  return Bags.from_lists([[first_tile + i] for i in range(len(labels))], labels)


def training_bags(split: TiledSplit, positive: int) -> Bags:
  """The weak-label bags of a training split (see the module docstring): OK tiles and NG instances as
  one-tile bags, each NG image without a known instance as one bag of all its tiles."""
  members, labels = [], []
  order = np.argsort(split.bag, kind="stable")
  starts = np.searchsorted(split.bag[order], np.arange(len(split.image_files) + 1))
  for i, label in enumerate(split.image_labels):
    tiles = order[starts[i] : starts[i + 1]]
    inst = tiles[split.instance[tiles] == 1]
    if label != positive:
      members += [[t] for t in tiles]
      labels += [label] * len(tiles)
    elif len(inst):
      members += [[t] for t in inst]
      labels += [label] * len(inst)
    else:
      members.append(list(tiles))
      labels.append(label)
  return Bags.from_lists(members, labels)


def aggregate(tile_scores: np.ndarray, bag: np.ndarray, n_images: int, k: int) -> np.ndarray:
  """(n_images,) mean of each image's k highest tile scores (all of them when it has fewer than k)."""
  s, b = np.asarray(tile_scores, np.float64).reshape(-1), np.asarray(bag).reshape(-1)
  if len(s) != len(b):
    raise ValueError(f"{len(s)} tile scores for {len(b)} tiles")
  order = np.lexsort((-s, b))
  b, s = b[order], s[order]
  starts = np.searchsorted(b, np.arange(n_images))
  rank = np.arange(len(b)) - starts[b]
  keep = rank < k
  total = np.bincount(b[keep], weights=s[keep], minlength=n_images)
  count = np.bincount(b[keep], minlength=n_images)
  if (count == 0).any():
    raise ValueError(f"image {int(np.flatnonzero(count == 0)[0])} has no tile score")
  return total / count


def key_tiles(features: np.ndarray, bag: np.ndarray, candidates: np.ndarray, reference: np.ndarray, k: int):
  """Indices of the k candidate tiles of each bag farthest from their nearest reference tile.

  With OK tiles as the reference this picks, without labels below the image, the tiles of an NG image
  least like anything seen on OK images: the likeliest defect tiles (features: pixels or latent codes).
  """
  x = np.asarray(features, np.float32).reshape(len(features), -1)
  cand, ref = np.flatnonzero(candidates), np.flatnonzero(reference)
  if not len(cand):
    return np.zeros(0, np.int64)
  if not len(ref):
    raise ValueError("key_tiles: no reference (OK) tile to compare with")
  r = x[ref]
  r2 = np.einsum("ij,ij->i", r, r)
  nearest = np.empty(len(cand), np.float64)
  for i in range(0, len(cand), 512):
    c = x[cand[i : i + 512]]
    d = np.einsum("ij,ij->i", c, c)[:, None] + r2[None, :] - 2.0 * c @ r.T
    nearest[i : i + 512] = d.min(1)
  out = []
  for b in np.unique(bag[cand]):
    members = np.flatnonzero(bag[cand] == b)
    out.append(cand[members[np.argsort(-nearest[members], kind="stable")[:k]]])
  return np.sort(np.concatenate(out))


def grid(shape: tuple[int, int], size: int, stride: int) -> list[tuple[int, int]]:
  """Top-left corners (y, x) of the tiles covering an image of `shape` (last row/column at the border)."""
  if shape[0] < size or shape[1] < size:
    raise BadImageError(
      f"image is {shape[1]}x{shape[0]}, smaller than the {size}x{size} tile (config.data.patches.size): "
      "lower the tile size (images are never padded)"
    )
  return patches.tile_positions(shape, size, stride)


def _mask_of(settings: TileSettings, root: str, rel: str, shape: tuple[int, int]) -> np.ndarray | None:
  """The image's defect mask (bool), None where there is no mask file or it is empty; a mask of another
  size than its image is a ValueError naming both files."""
  path = os.path.join(settings.mask_root, os.path.splitext(rel)[0] + settings.mask_suffix)
  if not os.path.exists(path):
    return None
  m = image_io.open_image(path, channels=1)
  if m.size != (shape[1], shape[0]):
    raise ValueError(
      f"mask {path} is {m.size[0]}x{m.size[1]} but its image {os.path.join(root, rel)} is {shape[1]}x{shape[0]}"
    )
  mask = np.asarray(m) > 0
  return mask if mask.any() else None


def _positions(image, mask, settings: TileSettings, size: int, stride: int, keep_ok: int, rng):
  """(positions, instance flags) of one image's tiles (see `cut_image`)."""
  h, w = image.shape[:2]
  pos = grid((h, w), size, stride)
  if mask is not None and settings.mode == "defect_crops":
    centres = patches.defect_centres(mask, size)
    return [patches.crop_around((h, w), c, size) for c in centres], np.ones(len(centres), np.int8)
  if mask is not None:
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    hits = [
      integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x] for y, x in pos
    ]
    pos = [p for p, n in zip(pos, hits) if n > 0]
    return pos, np.ones(len(pos), np.int8)
  if settings.min_std > 0:
    std = [float(image[y : y + size, x : x + size].std()) for y, x in pos]
    busy = [p for p, s in zip(pos, std) if s >= settings.min_std]
    pos = busy or [pos[int(np.argmax(std))]]
  if keep_ok and len(pos) > keep_ok:
    pos = [pos[i] for i in np.sort(rng.choice(len(pos), keep_ok, replace=False))]
  return pos, np.zeros(len(pos), np.int8)


def cut_image(
  image: np.ndarray,
  settings: TileSettings,
  *,
  image_size: int,
  mask: np.ndarray | None = None,
  keep_ok: int = 0,
  rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
  """(tiles at image_size x image_size, their top-left corners, NG-instance flags) of one (H, W, C) image.

  Without a mask: the whole grid (flat tiles dropped by min_std, at most `keep_ok` drawn at random when
  > 0). With a mask: the tiles overlapping it ('tiles') or crops centred on its regions ('defect_crops').
  """
  size, stride = settings.tile_size(image_size), settings.tile_stride(image_size)
  rng = rng if rng is not None else np.random.default_rng(0)
  pos, inst = _positions(image, mask, settings, size, stride, keep_ok, rng)
  tiles = np.stack([image[y : y + size, x : x + size] for y, x in pos]) if pos else np.zeros((0, size, size, 1))
  if size != image_size and len(tiles):
    c = image.shape[-1]
    tiles = np.stack(
      [
        np.asarray(image_io.fit_image(Image.fromarray(t[..., 0] if c == 1 else t), image_size, "resize")).reshape(
          image_size, image_size, c
        )
        for t in tiles
      ]
    )
  return np.asarray(tiles, np.uint8), pos, inst


def load_split(
  root: str,
  images: ImageSet,
  settings: TileSettings,
  *,
  image_size: int,
  channels: int,
  train: bool,
  positive: int,
  on_error: str = "raise",
  seed: int = 0,
) -> tuple[TiledSplit, list[tuple[str, str]]]:
  """Tiles of the images `images.files` (relative to `root`) -> (TiledSplit, skipped (file, reason)).

  Training NG images use their masks (when `settings.mask_root` is set); OK training images keep at most
  `ok_tiles_per_image` tiles. Bad images (unreadable, smaller than a tile) raise a ValueError naming the
  file, or with on_error='skip' are left out and returned as skipped.
  """

  def one(i):
    rel, label = images.files[i], int(images.labels[i])
    im = image_io.open_image(os.path.join(root, rel), channels=channels)
    arr = np.asarray(im, np.uint8).reshape(im.size[1], im.size[0], channels)
    use_mask = train and label == positive and settings.mask_root
    mask = _mask_of(settings, root, rel, arr.shape[:2]) if use_mask else None
    keep_ok = int(settings.ok_tiles_per_image) if train and label != positive else 0
    return cut_image(
      arr, settings, image_size=image_size, mask=mask, keep_ok=keep_ok, rng=np.random.default_rng([seed, i])
    )

  results = parallel_map(one, range(len(images)), stop_on_error=on_error != "skip")
  tiles, files, bag, inst, skipped, kept_files, kept_labels = [], [], [], [], [], [], []
  for i, (res, err) in enumerate(results):
    rel = images.files[i]
    if err is not None:
      if not isinstance(err, BadImageError):
        raise err
      if on_error != "skip":
        raise ValueError(f"{os.path.join(root, rel)}: {err}") from None
      skipped.append((rel, str(err)))
      continue
    t, pos, flags = res
    tiles.append(t)
    files += [f"{rel}#{y}_{x}" for y, x in pos]
    bag += [len(kept_files)] * len(t)
    inst.append(flags)
    kept_files.append(rel)
    kept_labels.append(int(images.labels[i]))
  empty = np.zeros((0, image_size, image_size, channels), np.uint8)
  tile_set = ImageSet(
    images=np.concatenate(tiles) if tiles else empty,
    labels=np.asarray([kept_labels[b] for b in bag], np.int32),
    class_names=images.class_names,
    files=files,
  )
  split = TiledSplit(tile_set, np.asarray(bag), np.concatenate(inst) if inst else np.zeros(0), kept_files, kept_labels)
  return split, skipped


def save_split(path, split: TiledSplit) -> None:
  """`prepare_data.save_split`'s keys (so `load_split` reads the tiles as an ImageSet) plus the bag arrays."""
  np.savez(
    path,
    images=split.tiles.images,
    labels=split.tiles.labels,
    files=np.array(split.tiles.files, dtype=object),
    class_names=np.array(split.tiles.class_names, dtype=object),
    bag=split.bag,
    instance=split.instance,
    image_files=np.array(split.image_files, dtype=object),
    image_labels=split.image_labels,
  )


def load_saved_split(path) -> TiledSplit:
  """A split written by `save_split`; a file without bag arrays (mode 'none') is a ValueError."""
  with np.load(path, allow_pickle=True) as z:
    if "bag" not in z:
      raise ValueError(f"{path} holds whole images, not tiles: rerun the data stage with config.data.patches.mode")
    tiles = ImageSet(images=z["images"], labels=z["labels"], class_names=list(z["class_names"]), files=list(z["files"]))
    return TiledSplit(tiles, z["bag"], z["instance"], list(z["image_files"]), z["image_labels"])
