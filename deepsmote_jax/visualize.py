"""Image grids: inputs beside reconstructions, synthetic beside real samples (Pillow); captioned grids of
images for the report (matplotlib, `captioned_grid`)."""

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


def figure(figsize=(5.0, 4.5), dpi: int = 100):
  """A matplotlib Figure on the Agg canvas (no pyplot, no global backend change)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=figsize, dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def captioned_grid(
  images_u8,
  captions: list[str],
  path: str | os.PathLike,
  *,
  columns: int = 6,
  title: str = "",
  column_titles: list[str] | None = None,
  cell: float = 1.9,
) -> pathlib.Path:
  """PNG of uint8 (H, W, C) images in a grid, each with its caption (e.g. a file name) below it;
  `column_titles` head the first row (e.g. base | synthetic | neighbour). Images may differ in size."""
  n = len(images_u8)
  if n == 0 or len(captions) != n:
    raise ValueError(f"need one caption per image, got {n} images and {len(captions)} captions")
  columns = max(1, min(columns, n))
  rows = -(-n // columns)
  top = (0.45 if title else 0.05) + (0.25 if column_titles else 0.0)  # inches above the first row
  height = cell * rows + top
  fig = figure((cell * columns, height))
  for i, (img, cap) in enumerate(zip(images_u8, captions)):
    ax = fig.add_subplot(rows, columns, i + 1)
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[-1] == 1:
      arr = arr[..., 0]
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(_shorten(cap, int(cell * 17)), fontsize=6)
    if column_titles and i < columns:
      ax.set_title(column_titles[i], fontsize=8, fontweight="bold")
  if title:
    fig.suptitle(title, fontsize=9, y=1 - 0.1 / height, va="top")
  fig.tight_layout(rect=(0, 0, 1, 1 - (0.4 if title else 0.0) / height))
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  return path


def _shorten(text: str, width: int = 28) -> str:
  """A caption that fits under a thumbnail: the end of a long path is kept (it names the file)."""
  text = str(text)
  return text if len(text) <= width else "..." + text[-(width - 3) :]
