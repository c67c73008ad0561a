"""Decoding one image: modes to 8-bit, resize policies, bad files as one named error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepsmote_jax.data import image_io


def test_16bit_is_scaled_not_clipped():
  im = Image.fromarray(np.array([[0, 65535], [257, 32896]], np.uint16))
  assert np.asarray(image_io.to_8bit(im, 1)).tolist() == [[0, 255], [1, 128]]


def test_rgba_composited_on_black():
  a = np.zeros((2, 2, 4), np.uint8)
  a[..., :3], a[0, 0, 3], a[1, 1, 3] = 200, 255, 0
  out = np.asarray(image_io.to_8bit(Image.fromarray(a, "RGBA"), 3))
  assert out[0, 0].tolist() == [200, 200, 200] and out[1, 1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("policy, size", [("resize", (8, 8)), ("pad", (8, 8)), ("center_crop", (8, 8))])
def test_policies_give_square_images(policy, size):
  im = Image.fromarray(np.full((20, 10), 100, np.uint8))
  assert image_io.fit_image(im, 8, policy).size == size


def test_center_crop_does_not_upscale():
  with pytest.raises(image_io.BadImageError, match="smaller"):
    image_io.fit_image(Image.fromarray(np.zeros((4, 4), np.uint8)), 8, "center_crop")


def test_bad_files_name_the_problem(tmp_path):
  empty, text = tmp_path / "empty.png", tmp_path / "text.png"
  empty.write_bytes(b"")
  text.write_text("not an image")
  with pytest.raises(image_io.BadImageError, match="empty file"):
    image_io.decode_image(str(empty), 8, 1, "resize")
  with pytest.raises(image_io.BadImageError, match="not a recognised image"):
    image_io.decode_image(str(text), 8, 1, "resize")


def test_settings_are_checked():
  with pytest.raises(ValueError, match="channels"):
    image_io.check_settings(8, 2, "resize", "raise")
  with pytest.raises(ValueError, match="resize"):
    image_io.check_settings(8, 1, "stretch", "raise")


def test_lossy_conversions_are_noted():
  notes = []
  image_io.to_8bit(Image.fromarray(np.full((2, 2), 1000, np.uint16)), 1, notes)
  image_io.to_8bit(Image.new("CMYK", (2, 2), (0, 255, 0, 0)), 3, notes)
  image_io.to_8bit(Image.new("LA", (2, 2), (50, 10)), 1, notes)
  assert notes == [image_io.NOTE_16BIT, "CMYK converted to RGB", image_io.NOTE_ALPHA]


def test_lossless_conversions_are_not_noted():
  notes = []
  opaque = image_io.to_8bit(Image.new("RGBA", (2, 2), (200, 100, 50, 255)), 3, notes)
  image_io.to_8bit(Image.new("P", (2, 2)), 3, notes)
  image_io.to_8bit(Image.new("1", (2, 2)), 1, notes)
  assert notes == [] and np.asarray(opaque)[0, 0].tolist() == [200, 100, 50]
  image_io.to_8bit(Image.new("RGBA", (2, 2), (200, 100, 50, 254)), 3)  # no list given: nothing recorded


@pytest.mark.parametrize(
  "size, target, tiny",
  [
    ((16, 16), 64, False),
    ((15, 200), 64, True),
    ((1, 1), 2, True),
    ((1, 1), 1, False),
    ((1, 40), 4, True),
    ((2, 2), 8, False),
    ((2, 2), 9, True),
    ((3, 3), 16, True),
    ((4, 4), 16, False),
  ],
)
def test_tiny_threshold(size, target, tiny):
  if tiny:
    with pytest.raises(image_io.BadImageError, match=f"{size[0]}x{size[1]}.*{target}x{target}"):
      image_io.check_not_tiny(size, target)
  else:
    image_io.check_not_tiny(size, target)


def test_decode_rejects_tiny_files(tmp_path):
  Image.fromarray(np.full((1, 1), 7, np.uint8)).save(tmp_path / "dot.png")
  with pytest.raises(image_io.BadImageError, match="1x1, far smaller than the 64x64"):
    image_io.decode_image(str(tmp_path / "dot.png"), 64, 1, "resize")
  assert image_io.decode_image(str(tmp_path / "dot.png"), 1, 1, "resize").tolist() == [[[7]]]
