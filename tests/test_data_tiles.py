"""Tiles at native resolution: coverage, masks and defect crops, bags, per-image aggregation, key tiles, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepsmote_jax import config_lib
from deepsmote_jax.data import tiles
from deepsmote_jax.data.folder import ImageSet


def _image(h, w, seed=0):
  return np.random.default_rng(seed).integers(60, 200, (h, w, 1)).astype(np.uint8)


@pytest.mark.parametrize("shape,size,stride", [((40, 100), 16, 16), ((37, 53), 16, 10), ((16, 16), 16, 8)])
def test_tiles_cover_every_pixel_and_stay_inside(shape, size, stride):
  pos = tiles.grid(shape, size, stride)
  covered = np.zeros(shape, int)
  for y, x in pos:
    assert 0 <= y <= shape[0] - size and 0 <= x <= shape[1] - size
    covered[y : y + size, x : x + size] += 1
  assert covered.min() >= 1
  assert max(y for y, _ in pos) == shape[0] - size and max(x for _, x in pos) == shape[1] - size


def test_cut_image_native_pixels_masks_crops_and_caps():
  img = _image(48, 96)
  img[:16, :16] = 100  # one flat tile
  s = tiles.TileSettings(mode="tiles", size=16)
  t, pos, inst = tiles.cut_image(img, s, image_size=16)
  assert t.shape == (18, 16, 16, 1) and not inst.any()
  y, x = pos[5]
  np.testing.assert_array_equal(t[5], img[y : y + 16, x : x + 16])  # native pixels, no resize
  t, pos, _ = tiles.cut_image(img, tiles.TileSettings(mode="tiles", size=16, min_std=5.0), image_size=16)
  assert (0, 0) not in pos and len(pos) == 17
  t, pos, _ = tiles.cut_image(img, s, image_size=16, keep_ok=4, rng=np.random.default_rng(0))
  assert len(pos) == 4 and len(set(pos)) == 4

  mask = np.zeros((48, 96), bool)
  mask[20:22, 40:60] = True  # a thin crack across two tile columns of one tile row
  t, pos, inst = tiles.cut_image(img, s, image_size=16, mask=mask)
  assert sorted(pos) == [(16, 32), (16, 48)] and inst.all()
  t, pos, inst = tiles.cut_image(img, tiles.TileSettings(mode="defect_crops", size=16), image_size=16, mask=mask)
  assert pos == [(13, 42)] and inst.all()  # one crop centred on the region
  t, pos, _ = tiles.cut_image(img, tiles.TileSettings(mode="tiles", size=32), image_size=16)  # tile > model size
  assert t.shape[1:] == (16, 16, 1) and len(pos) == 2 * 3


def test_aggregate_is_the_top_k_mean_per_image():
  rng = np.random.default_rng(0)
  bag = rng.permutation(np.repeat(np.arange(5), [1, 3, 4, 2, 6]))
  scores = rng.random(len(bag))
  for k in (1, 2, 3):
    got = tiles.aggregate(scores, bag, 5, k)
    want = [np.sort(scores[bag == i])[::-1][:k].mean() for i in range(5)]
    np.testing.assert_allclose(got, want)
  with pytest.raises(ValueError, match="image 5 has no tile"):
    tiles.aggregate(scores, bag, 6, 1)


def _split():
  """Three images: OK (3 tiles), NG with a mask instance (2 tiles, 1 instance), NG without mask (3 tiles)."""
  bag = np.array([0, 0, 0, 1, 1, 2, 2, 2])
  inst = np.array([0, 0, 0, 1, 0, 0, 0, 0])
  images = np.zeros((8, 8, 8, 1), np.uint8)
  images[6] = 255  # the odd tile of the mask-less NG image
  ts = ImageSet(images, [0, 0, 0, 1, 1, 1, 1, 1], ["OK", "NG"], [f"t{i}" for i in range(8)])
  return tiles.TiledSplit(ts, bag, inst, ["ok.png", "ng_mask.png", "ng.png"], [0, 1, 1])


def test_training_bags_weak_labels():
  bags = tiles.training_bags(_split(), positive=1)
  rows = [(sorted(bags.index[i][bags.valid[i]].tolist()), int(bags.label[i])) for i in range(len(bags))]
  # OK tiles as one-tile OK bags, the mask instance as a one-tile NG bag (its other tile unused), one NG bag.
  assert rows == [([0], 0), ([1], 0), ([2], 0), ([3], 1), ([5, 6, 7], 1)]
  more = bags.concat(tiles.singles(8, np.array([1, 1])))
  assert more.index.shape == (7, 3) and more.index[5:, 0].tolist() == [8, 9] and more.valid[5:].sum() == 2


def test_key_tiles_pick_what_ok_tiles_do_not_show():
  s = _split()
  feats = s.tiles.images.reshape(8, -1).astype(float)
  cand = (s.image_labels[s.bag] == 1) & (s.bag == 2)
  assert tiles.key_tiles(feats, s.bag, cand, s.image_labels[s.bag] == 0, 1).tolist() == [6]


def _write(path, arr):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(arr).save(path)


def test_load_split_and_one_line_errors(tmp_path):
  root, masks = tmp_path / "img", tmp_path / "masks"
  _write(root / "OK" / "a.png", _image(32, 64)[..., 0])
  _write(root / "NG" / "b.png", _image(32, 64, 1)[..., 0])
  _write(root / "NG" / "small.png", _image(12, 40, 2)[..., 0])
  m = np.zeros((32, 64), np.uint8)
  m[3:5, 40:50] = 255
  _write(masks / "NG" / "b.png", m)
  ims = ImageSet(np.zeros((2, 1, 1, 1), np.uint8), [1, 0], ["OK", "NG"], ["NG/b.png", "OK/a.png"])
  s = tiles.TileSettings(mode="tiles", size=16, mask_root=str(masks))
  split, skipped = tiles.load_split(str(root), ims, s, image_size=16, channels=1, train=True, positive=1)
  assert split.image_files == ["NG/b.png", "OK/a.png"] and not skipped
  assert split.bag.tolist() == [0, 0] + [1] * 8 and split.instance.tolist() == [1, 1] + [0] * 8
  assert split.tiles.files[:2] == ["NG/b.png#0_32", "NG/b.png#0_48"] and split.image_counts() == {"OK": 1, "NG": 1}
  path = tmp_path / "x.npz"
  tiles.save_split(path, split)
  again = tiles.load_saved_split(path)
  assert again.image_files == split.image_files and again.bag.tolist() == split.bag.tolist()

  small = ImageSet(np.zeros((1, 1, 1, 1), np.uint8), [1], ["OK", "NG"], ["NG/small.png"])
  with pytest.raises(
    ValueError, match=r"small\.png: image is 40x12, smaller than the 16x16 tile \(config\.data\.patches\.size\)"
  ):
    tiles.load_split(str(root), small, s, image_size=16, channels=1, train=False, positive=1)
  split, skipped = tiles.load_split(
    str(root), small, s, image_size=16, channels=1, train=False, positive=1, on_error="skip"
  )
  assert len(split.image_files) == 0 and skipped[0][0] == "NG/small.png"

  _write(masks / "NG" / "b.png", np.zeros((30, 64), np.uint8))
  with pytest.raises(ValueError, match=r"mask .*NG/b\.png is 64x30 but its image .*NG/b\.png is 64x32"):
    tiles.load_split(str(root), ims, s, image_size=16, channels=1, train=True, positive=1)


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("size", 4, r"config\.data\.patches\.size=4: tiles need at least 8 px"),
    ("stride", 7, r"config\.data\.patches\.stride=7"),
    ("mode", "tile", r"config\.data\.patches\.mode='tile': choose one of"),
    ("top_k", 0, r"config\.data\.patches\.top_k=0"),
    ("mask_root", "/no/such/folder", r"config\.data\.patches\.mask_root='/no/such/folder' is not a folder"),
  ],
)
def test_bad_settings_name_the_setting(key, value, match):
  c = config_lib.autoencoder_config(preset="micro_16", channels=1, epochs=1, batch_size=8)
  c.data.patches.mode = "tiles"
  c.data.patches[key] = value
  with pytest.raises(ValueError, match=match):
    config_lib.to_dataclass(tiles.TileSettings, c.data.patches, "data.patches")
