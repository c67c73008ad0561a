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
