"""tf.data pipeline: sharding covers every file once, seeded determinism, static shapes, decoding, caching,
augmentation, device_prefetch / stack_steps, and patch extraction."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow")

from deepsmote_jax.data import folder, patches, pipeline  # pylint: disable=g-import-not-at-top
from deepsmote_jax.data.folder import ImageSet  # pylint: disable=g-import-not-at-top


def _set(n=23, size=8, c=1):
  images = np.zeros((n, size, size, c), np.uint8)
  images[:, 0, 0, 0] = np.arange(n)  # the example id, readable after batching (no augmentation)
  return ImageSet(images, np.arange(n) % 3, ["a", "b", "c"], [f"{i}.png" for i in range(n)])


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipe")
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (17, 12, 12, 1), dtype=np.uint8)
  imgs[:, 0, 0, 0] = np.arange(17)
  folder.save_image_folder(imgs, np.arange(17) % 2, ["x", "y"], root)
  Image.fromarray(imgs[0, ..., 0]).save(root / "x" / "tiff_one.tif")  # decoded by the Pillow fallback
  return root


@pytest.mark.parametrize("count", [1, 3, 4])
def test_sharding_covers_every_file_once(png_folder, count):
  names, files, labels = folder.list_image_folder(png_folder)
  seen = []
  for p in range(count):
    ds = pipeline.make_dataset(
      (files, labels),
      root=png_folder,
      image_size=12,
      channels=1,
      batch_size=1,
      repeat=False,
      shuffle=False,
      process_index=p,
      process_count=count,
      decoder="pillow",
      drop_remainder=False,
    )
    seen += [int(b["image"][0, 0, 0, 0]) for b in ds.as_numpy_iterator()]
  expected = [0] * 2 + list(range(1, 17))  # the tiff copies image 0
  assert sorted(seen) == sorted(expected)
  assert sorted(pipeline.shard_indices(18, 1, 4)) == [1, 5, 9, 13, 17]


def test_in_memory_deterministic_and_static(png_folder):
  ds = _set()
  kw = dict(batch_size=4, seed=7, process_index=0, process_count=1)
  a = [b["image"][:, 0, 0, 0].tolist() for b, _ in zip(pipeline.numpy_batches(ds, **kw), range(12))]
  b = [b["image"][:, 0, 0, 0].tolist() for b, _ in zip(pipeline.numpy_batches(ds, **kw), range(12))]
  c = [b["image"][:, 0, 0, 0].tolist() for b, _ in zip(pipeline.numpy_batches(ds, **{**kw, "seed": 8}), range(12))]
  assert a == b and a != c
  assert all(len(x) == 4 for x in a)
  assert sorted(sum(a[:5], [])) == sorted(set(sum(a[:5], [])))  # epoch 1 (first 20 of 23) no duplicates
  one = list(pipeline.numpy_batches(ds, batch_size=5, repeat=False, process_index=0, process_count=1))
  assert len(one) == 4 and one[0]["label"].dtype == np.int32 and one[0]["image"].dtype == np.uint8
  f = next(pipeline.numpy_batches(ds, batch_size=5, as_float=True, process_index=0, process_count=1))
  assert f["image"].dtype == np.float32 and f["image"].min() >= -1 and f["image"].max() <= 1


def test_file_decoding_matches_pillow_and_cache(png_folder, tmp_path):
  names, files, labels = folder.list_image_folder(png_folder)
  ref = folder.load_image_folder(png_folder, image_size=12, channels=1)
  kw = dict(
    root=png_folder,
    image_size=12,
    channels=1,
    batch_size=18,
    repeat=False,
    shuffle=False,
    process_index=0,
    process_count=1,
  )
  for decoder in ("tf", "pillow"):
    out = next(pipeline.numpy_batches((files, labels), decoder=decoder, **kw))
    np.testing.assert_array_equal(out["image"], ref.images)
    np.testing.assert_array_equal(out["label"], ref.labels)
  prefix = str(tmp_path / "cache")
  ds = pipeline.make_dataset((files, labels), cache=prefix, **kw)
  first = list(ds.as_numpy_iterator())  # the cache file is complete once an epoch has been read
  assert any(p.startswith("cache") for p in os.listdir(tmp_path))
  np.testing.assert_array_equal(list(ds.as_numpy_iterator())[0]["image"], first[0]["image"])


def test_corrupt_file_in_pipeline(tmp_path):
  folder.save_image_folder(np.full((3, 6, 6), 9, np.uint8), [0, 0, 0], ["c"], tmp_path)
  (tmp_path / "c" / "bad.png").write_bytes(b"garbage")
  names, files, labels = folder.list_image_folder(tmp_path)
  kw = dict(root=tmp_path, image_size=6, channels=1, batch_size=1, repeat=False, shuffle=False, drop_remainder=False)
  kw.update(process_index=0, process_count=1, decoder="pillow")
  with pytest.raises(Exception, match="bad.png|not a recognised"):
    list(pipeline.numpy_batches((files, labels), **kw))
  assert len(list(pipeline.numpy_batches((files, labels), on_error="skip", **kw))) == 3


def test_augment_seeded():
  ds = _set(n=8, size=6)
  ds.images[:, :, :3] = 200  # left half bright: flips move it
  kw = dict(
    batch_size=8,
    seed=1,
    shuffle=False,
    process_index=0,
    process_count=1,
    augment=pipeline.Augment(flip_lr=True, max_shift=1),
  )
  a = next(pipeline.numpy_batches(ds, **kw))["image"]
  b = next(pipeline.numpy_batches(ds, **kw))["image"]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, ds.images) and a.shape == ds.images.shape


def test_stack_steps_and_device_prefetch():
  import jax  # pylint: disable=g-import-not-at-top

  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  it = pipeline.numpy_batches(_set(), batch_size=4, shuffle=False, repeat=False, process_index=0, process_count=1)
  stacked = list(pipeline.stack_steps(it, 2))
  assert len(stacked) == 2 and stacked[0]["image"].shape == (2, 4, 8, 8, 1)
  out = list(pipeline.device_prefetch(iter(stacked), sharding, size=2))
  assert isinstance(out[0]["image"], jax.Array) and out[0]["image"].sharding == sharding
  np.testing.assert_array_equal(np.asarray(out[1]["label"]), stacked[1]["label"])

  def broken():
    yield {"x": np.zeros(2)}
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError, match="boom"):
    list(pipeline.device_prefetch(broken()))


def test_tiles_and_defect_crops(tmp_path):
  img = np.zeros((50, 70), np.uint8)
  img[30:34, 60:64] = 255
  mask = np.zeros((50, 70), np.uint8)
  mask[30:34, 60:64] = 255
  mask[2:4, 2:4] = 255
  Image.fromarray(img).save(tmp_path / "im.png")
  tiles = patches.extract_patches(img[..., None], patches.TileSpec(stride=16), size=32)
  assert [t for _, t in tiles] == [f"{y}_{x}" for y in (0, 16, 18) for x in (0, 16, 32, 38)]
  crops = patches.extract_patches(img[..., None], patches.DefectCropSpec("unused"), size=20, mask=mask > 0)
  assert [t for _, t in crops] == ["22_50", "0_0"]  # largest defect first, shifted inside the image
  assert crops[0][0].max() == 255
  small = patches.extract_patches(img[:10, :10, None], patches.TileSpec(), size=16)
  assert len(small) == 1 and small[0][0].shape == (16, 16, 1)


def test_defect_crops_magnetic_tile(magnetic_tile):
  spec = patches.DefectCropSpec(str(magnetic_tile.parent / "masks"), size=64, no_defect="skip")
  s = folder.load_image_folder(
    magnetic_tile, image_size=32, channels=1, classes=["fray", "free"], patches=spec, min_per_class=0
  )
  assert s.counts()["free"] == 0 and s.counts()["fray"] >= 32 and s.images.shape[1:] == (32, 32, 1)
  assert all("#" in f for f in s.files)
