"""Image grids (Pillow only): inputs beside reconstructions, synthetic beside real samples."""

from __future__ import annotations

import os
import pathlib

import numpy as np
from PIL import Image


def grid(images_u8: np.ndarray, *, columns: int, pad: int = 2, background: int = 255) -> np.ndarray:
  """Tiles uint8 (N, H, W, C) images into one (rows*H, columns*W, C) image."""
  images = np.asarray(images_u8)
  if images.ndim != 4 or len(images) == 0:
    raise ValueError(f"expected a non-empty (N, H, W, C) array, got shape {images.shape}")
  n, h, w, c = images.shape
  rows = -(-n // columns)
  out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), background, np.uint8)
  for i, img in enumerate(images):
    r, col = divmod(i, columns)
    out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = img
  return out


def save_png(array_u8: np.ndarray, path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  arr = np.asarray(array_u8)
  Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)
  return path


def side_by_side(left_u8: np.ndarray, right_u8: np.ndarray, path: str | os.PathLike, *, pairs_per_row: int = 4):
  """PNG grid of pairs (left[i] | right[i]): e.g. input | reconstruction, real | synthetic."""
  n = min(len(left_u8), len(right_u8))
  if n == 0:
    raise ValueError("nothing to plot")
  if left_u8.shape[-1] != right_u8.shape[-1]:
    c = max(left_u8.shape[-1], right_u8.shape[-1])
    left_u8, right_u8 = (np.repeat(a, c // a.shape[-1], axis=-1) for a in (left_u8, right_u8))
  inter = np.empty((2 * n,) + left_u8.shape[1:], np.uint8)
  inter[0::2], inter[1::2] = left_u8[:n], right_u8[:n]
  return save_png(grid(inter, columns=2 * pairs_per_row), path)
