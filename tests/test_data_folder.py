"""`load_image_folder` / `save_image_folder`: modes, sizes, resize policies, bad input, ImageSet methods."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from deepsmote_jax.data import image_io, patches
from deepsmote_jax.data.folder import ImageSet, load_image_folder, save_image_folder


def _save(path, arr, mode=None, fmt=None, **kw):
  path.parent.mkdir(parents=True, exist_ok=True)
  im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
  im.save(path, format=fmt, **kw)
  return path


def _const(h, w, value, c=None):
  shape = (h, w) if c is None else (h, w, c)
  return np.full(shape, value, np.uint8)


@pytest.fixture
def mixed_folder(tmp_path):
  """Two classes, every mode and format, sizes from 3x3 to 300x120, constant colours to check values."""
  root = tmp_path / "mixed"
  a, b = root / "a", root / "b"
  _save(a / "gray.png", _const(30, 50, 90))
  _save(a / "rgb.jpg", _const(64, 48, 0, 3) + np.array([90, 90, 90], np.uint8), quality=100)
  _save(a / "small.bmp", _const(3, 3, 200))  # upscaled, but not below image_size / 4 (1x1 would be)
  _save(a / "thin.tif", _const(3, 7, 10))
  im16 = Image.fromarray(np.full((20, 33), 32896, np.uint16))  # 32896 / 257 = 128; clipping would give 255
  assert im16.mode == "I;16"
  im16.save(a / "deep16.png")
  im16.save(a / "deep16.tif")
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[..., :3] = (200, 100, 50)
  rgba[:8, :, 3] = 255  # top half opaque, bottom half transparent -> black
  _save(b / "rgba.png", rgba)
  pal = Image.new("P", (40, 10))
  pal.putpalette([10, 20, 30] + [0] * 765)
  pal.save(b / "palette.png")
  _save(b / "bilevel.png", _const(12, 12, 255), mode="1")
  _save(b / "la.png", np.dstack([_const(9, 9, 100), _const(9, 9, 255)]))
  _save(b / "big.JPEG", _const(120, 300, 77, 3), quality=100)
  (b / "notes.txt").write_text("not an image, and not an image extension: ignored")
  (b / ".DS_Store").write_bytes(b"\0\1\2")
  return root


def test_mixed_modes_and_sizes_to_gray(mixed_folder):
  with pytest.warns(UserWarning, match=r"3 file\(s\) loaded with changes: 16-bit scaled.*: 2 .*alpha.*: 1"):
    s = load_image_folder(mixed_folder, image_size=8, channels=1)
  assert s.images.shape == (11, 8, 8, 1) and s.images.dtype == np.uint8 and s.labels.dtype == np.int32
  assert s.class_names == ["a", "b"]
  assert s.counts() == {"a": 6, "b": 5}
  assert s.files[:2] == [os.path.join("a", "deep16.png"), os.path.join("a", "deep16.tif")]
  assert not s.skipped
  assert sorted(s.notes) == [
    ("a/deep16.png", image_io.NOTE_16BIT),
    ("a/deep16.tif", image_io.NOTE_16BIT),
    ("b/rgba.png", image_io.NOTE_ALPHA),
  ]  # la.png is opaque: nothing lost, no note
  by_file = {f: img[..., 0] for f, img in zip(s.files, s.images)}
  assert (by_file["a/gray.png"] == 90).all()
  assert np.abs(by_file["a/rgb.jpg"].astype(int) - 90).max() <= 2
  assert (by_file["a/small.bmp"] == 200).all()
  assert (by_file["a/thin.tif"] == 10).all()
  assert (by_file["a/deep16.png"] == 128).all() and (by_file["a/deep16.tif"] == 128).all()
  assert (by_file["b/bilevel.png"] == 255).all()
  assert (by_file["b/la.png"] == 100).all()
  luma = round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)
  assert np.abs(by_file["b/palette.png"].astype(int) - luma).max() <= 1
  rgba = by_file["b/rgba.png"]
  assert rgba[0, 0] > 100 and (rgba[-1] == 0).all()  # alpha composited onto black


@pytest.mark.filterwarnings("ignore:.*loaded with changes")
def test_mixed_modes_to_rgb(mixed_folder):
  s = load_image_folder(mixed_folder, image_size=5, channels=3, num_workers=3)
  assert s.images.shape == (11, 5, 5, 3)
  by_file = dict(zip(s.files, s.images))
  assert (by_file["b/palette.png"] == [10, 20, 30]).all()
  assert (by_file["b/rgba.png"][0] == [200, 100, 50]).all() and (by_file["b/rgba.png"][-1] == 0).all()
  assert (by_file["a/gray.png"] == 90).all()  # gray replicated into 3 channels
  assert np.abs(by_file["b/big.JPEG"].astype(int) - 77).max() <= 2


@pytest.mark.filterwarnings("ignore:.*loaded with changes")
def test_thread_count_does_not_change_result(mixed_folder):
  one = load_image_folder(mixed_folder, image_size=12, channels=3, num_workers=1)
  many = load_image_folder(mixed_folder, image_size=12, channels=3, num_workers=6)
  np.testing.assert_array_equal(one.images, many.images)
  assert one.files == many.files


def test_resize_policies_geometry(tmp_path):
  root = tmp_path / "geo"
  img = np.zeros((20, 40), np.uint8)
  img[:, 20:] = 255  # left half black, right half white; 40 wide, 20 high
  _save(root / "x" / "wide.png", img)
  s = load_image_folder(root, image_size=16, channels=1, resize="resize")
  assert s.images.shape == (1, 16, 16, 1)
  assert s.images[0, :, :7].max() == 0 and s.images[0, :, 9:].min() == 255
  # center_crop: 40x20 -> 32x16, keep columns 8..24: the middle of the image, edge at column 8.
  c = load_image_folder(root, image_size=16, channels=1, resize="center_crop").images[0, ..., 0]
  assert c[:, :7].max() == 0 and c[:, 9:].min() == 255
  # pad: 40x20 -> 16x8 pasted at rows 4..12, black borders above and below.
  p = load_image_folder(root, image_size=16, channels=1, resize="pad").images[0, ..., 0]
  assert p[:4].max() == 0 and p[12:].max() == 0 and p[4:12, 9:].min() == 255


def test_center_crop_rejects_small_images(tmp_path):
  root = tmp_path / "small"
  _save(root / "x" / "ok.png", _const(40, 40, 1))
  _save(root / "x" / "small.png", _const(40, 10, 1))
  with pytest.raises(ValueError, match="small.png.*smaller than 32x32"):
    load_image_folder(root, image_size=32, channels=1, resize="center_crop")
  with pytest.warns(UserWarning, match="skipped 1 file"):
    s = load_image_folder(root, image_size=32, channels=1, resize="center_crop", on_error="skip")
  assert s.files == ["x/ok.png"] and s.skipped[0][0] == "x/small.png"
  # The other policies upscale small images.
  assert len(load_image_folder(root, image_size=32, channels=1, resize="pad")) == 2


def test_patches_reject_tiny_images_and_keep_notes(tmp_path):
  root = tmp_path / "p"
  rgba = np.zeros((20, 40, 4), np.uint8)
  rgba[..., :3], rgba[..., 3] = 90, 255
  rgba[:, :4, 3] = 0
  _save(root / "x" / "wide.png", rgba)  # 2 tiles of 20x20, with a transparent strip: one note
  _save(root / "x" / "dot.png", _const(4, 4, 1))  # 4 px < 20 / 4 = 5: mostly padding
  spec = patches.TileSpec(size=20)
  with pytest.raises(ValueError, match=r"dot.png.*4x4, far smaller than the 20x20"):
    load_image_folder(root, image_size=10, channels=1, patches=spec)
  with pytest.warns(UserWarning, match=r"skipped 1 file.*1 file\(s\) loaded with changes: alpha"):
    s = load_image_folder(root, image_size=10, channels=1, patches=spec, on_error="skip")
  assert s.files == ["x/wide.png#0_0", "x/wide.png#0_20"] and s.skipped[0][0] == "x/dot.png"
  assert s.notes == [("x/wide.png", image_io.NOTE_ALPHA)]
  assert s.subset([1]).notes == s.notes and s.subset([]).notes == []


@pytest.fixture
def corrupt_folder(tmp_path):
  root = tmp_path / "corrupt"
  for i in range(3):
    _save(root / "good" / f"{i}.png", _const(10, 10, 50 * i))
  _save(root / "bad" / "fine.jpg", _const(64, 64, 128, 3))
  full = (root / "bad" / "fine.jpg").read_bytes()
  (root / "bad" / "truncated.jpg").write_bytes(full[: len(full) // 3])
  (root / "bad" / "zero.png").write_bytes(b"")
  (root / "bad" / "text.png").write_text("hello, I am not a PNG\n" * 10)
  (root / "bad" / "noise.bmp").write_bytes(np.random.default_rng(0).bytes(500))
  _save(root / "bad" / "cut.png", np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8))
  png = (root / "bad" / "cut.png").read_bytes()
  (root / "bad" / "cut.png").write_bytes(png[: len(png) // 2])  # IDAT cut in the middle
  return root


def test_corrupt_files_raise_with_name(corrupt_folder):
  with pytest.raises(ValueError, match=r"bad[/\\]cut.png"):  # the first bad file in sorted order
    load_image_folder(corrupt_folder, image_size=8, channels=1)


@pytest.mark.parametrize("name", ["truncated.jpg", "zero.png", "text.png", "noise.bmp", "cut.png"])
def test_each_corrupt_file_raises(tmp_path, corrupt_folder, name):
  root = tmp_path / "one"
  (root / "c").mkdir(parents=True)
  (root / "c" / name).write_bytes((corrupt_folder / "bad" / name).read_bytes())
  with pytest.raises(ValueError, match=name.replace(".", r"\.")):
    load_image_folder(root, image_size=8, channels=3)


def test_corrupt_files_skipped_and_reported(corrupt_folder):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    s = load_image_folder(corrupt_folder, image_size=8, channels=1, on_error="skip")
  assert s.counts() == {"bad": 1, "good": 3}
  assert sorted(f for f, _ in s.skipped) == [
    "bad/cut.png",
    "bad/noise.bmp",
    "bad/text.png",
    "bad/truncated.jpg",
    "bad/zero.png",
  ]
  reasons = dict(s.skipped)
  assert "0 bytes" in reasons["bad/zero.png"] and "not a recognised image" in reasons["bad/text.png"]
  msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
  assert len(msgs) == 1 and "skipped 5 file(s)" in msgs[0] and "bad/cut.png" in msgs[0]


def test_folder_structure_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    load_image_folder(tmp_path / "nope", image_size=8, channels=1)
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="is empty"):
    load_image_folder(tmp_path / "empty", image_size=8, channels=1, on_error="skip")
  _save(tmp_path / "flat" / "a.png", _const(4, 4, 1))
  with pytest.raises(ValueError, match="no class subfolders"):
    load_image_folder(tmp_path / "flat", image_size=8, channels=1)
  with pytest.raises(ValueError, match="channels"):
    load_image_folder(tmp_path / "flat", image_size=8, channels=2)
  with pytest.raises(ValueError, match="resize"):
    load_image_folder(tmp_path / "flat", image_size=8, channels=1, resize="stretch")


def test_min_per_class_and_explicit_classes(tmp_path):
  root = tmp_path / "mpc"
  for i in range(3):
    _save(root / "many" / f"{i}.png", _const(4, 4, i))
  _save(root / "few" / "0.png", _const(4, 4, 9))
  (root / "none").mkdir()
  with pytest.raises(ValueError, match="none.*0 image"):
    load_image_folder(root, image_size=4, channels=1)
  with pytest.raises(ValueError, match="few.*min_per_class=2"):
    load_image_folder(root, image_size=4, channels=1, min_per_class=2, classes=["many", "few"])
  with pytest.warns(UserWarning):
    s = load_image_folder(root, image_size=4, channels=1, min_per_class=2, on_error="skip")
  assert s.class_names == ["many"] and len(s) == 3 and (s.labels == 0).all()
  assert {f for f, _ in s.skipped} == {"few/", "none/"}
  s = load_image_folder(root, image_size=4, channels=1, classes=["many", "few"])
  assert s.class_names == ["many", "few"] and s.counts() == {"many": 3, "few": 1}
  with pytest.raises(ValueError, match="missing_class"):
    load_image_folder(root, image_size=4, channels=1, classes=["many", "missing_class"])


def test_imageset_methods():
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8)
  s = ImageSet(
    imgs,
    [0, 1, 1, 0, 1, 1],
    ["ok", "ng"],
    [f"{i}.png" for i in range(6)],
    skipped=[("bad.png", "empty file")],
    attrs={"group": np.arange(6)},
    notes=[("0.png", "alpha composited on black"), ("5.png", "16-bit scaled")],
  )
  assert not hasattr(s, "to_float")  # the one uint8 <-> [-1, 1] conversion lives in models/pixels.py
  assert s.counts() == {"ok": 2, "ng": 4}
  sub = s.subset([5, 0])
  assert sub.files == ["5.png", "0.png"] and list(sub.labels) == [1, 0] and list(sub.attrs["group"]) == [5, 0]
  assert sub.notes == s.notes and sub.skipped == s.skipped
  masked = s.subset(s.labels == 0)
  assert masked.files == ["0.png", "3.png"]
  assert masked.notes == [("0.png", "alpha composited on black")]  # notes follow their images
  assert masked.skipped == [("bad.png", "empty file")]  # skipped is a record of the whole load
  both = sub.concat(masked)
  assert len(both) == 4 and both.counts() == {"ok": 3, "ng": 1}
  assert both.notes == sub.notes + masked.notes and len(both.skipped) == 2
  np.testing.assert_array_equal(both.images[2:], masked.images)
  with pytest.raises(ValueError, match="class names differ"):
    s.concat(ImageSet(imgs, np.zeros(6), ["a", "b"], [""] * 6, attrs={"group": np.arange(6)}))
  with pytest.raises(ValueError, match="uint8"):
    ImageSet(imgs.astype(np.float32), np.zeros(6), ["a"], [""] * 6)
  with pytest.raises(ValueError, match="labels"):
    ImageSet(imgs, np.full(6, 2), ["a", "b"], [""] * 6)


@pytest.mark.parametrize("channels", [1, 3])
def test_save_and_reload_round_trip(tmp_path, channels):
  rng = np.random.default_rng(channels)
  imgs = rng.integers(0, 256, (7, 9, 9, channels), dtype=np.uint8)
  labels = np.array([2, 0, 2, 1, 0, 2, 2])
  rels = save_image_folder(imgs, labels, ["z", "a", "m"], tmp_path / "out", names=[f"img{i}" for i in range(7)])
  assert rels[0] == os.path.join("m", "img0.png") and rels[3] == os.path.join("a", "img3.png")
  s = load_image_folder(tmp_path / "out", image_size=9, channels=channels, classes=["z", "a", "m"])
  order = [s.files.index(r) for r in rels]
  np.testing.assert_array_equal(s.images[order], imgs)
  np.testing.assert_array_equal(s.labels[order], labels)


def test_magnetic_tile_real_images(magnetic_tile):
  s = load_image_folder(magnetic_tile, image_size=32, channels=1, classes=["crack", "fray"])
  assert s.counts() == {"crack": 57, "fray": 32}
  assert all(f.startswith(("crack/exp", "fray/exp")) and "_num_" in f for f in s.files)
  assert s.images.shape == (89, 32, 32, 1) and s.images.std() > 5
  rgb = load_image_folder(magnetic_tile, image_size=16, channels=3, classes=["fray"], resize="pad")
  assert (rgb.images[..., 0] == rgb.images[..., 2]).all()  # gray replicated


def test_data_modules_import_without_tensorflow():
  code = (
    "import sys\n"
    'sys.modules["tensorflow"] = None\n'
    'sys.modules["tensorflow_datasets"] = None\n'
    "import pkgutil, importlib, deepsmote_jax.data as d\n"
    "for m in pkgutil.iter_modules(d.__path__):\n"
    '  importlib.import_module("deepsmote_jax.data." + m.name)\n'
    'print("ok")\n'
  )
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert res.returncode == 0 and "ok" in res.stdout, res.stderr
