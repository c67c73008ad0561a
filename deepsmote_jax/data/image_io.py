"""Decoding one image file: any Pillow mode to 8-bit gray or RGB, and a resize policy to a square size.

Shared by the folder loader, mask-guided patches, ELPV, TFDS and the tf.data pipeline, so every source
turns pixels into model input the same way. NumPy and Pillow only.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

RESIZE_POLICIES = ('resize', 'center_crop', 'pad')
ON_ERROR = ('raise', 'skip')
# Pillow's BILINEAR widens its kernel by the scale factor when shrinking, i.e. it averages over the
# source area (no aliasing), and interpolates bilinearly when enlarging.
_RESAMPLE = Image.Resampling.BILINEAR
# JPEGs are first decoded at a reduced DCT scale, but kept at least this many times the target size so the
# final (antialiased) resize still sees enough pixels; the same rule as Pillow's `thumbnail`.
_REDUCING_GAP = 2.0


class BadImageError(ValueError):
  """An input file that cannot be used (corrupt, not an image, too small, ...)."""


def composite_on_black(im: Image.Image) -> Image.Image:
  """RGBA/LA to RGB/L with transparent areas black (alpha premultiplied), not their arbitrary colour."""
  a = np.asarray(im, dtype=np.uint16)
  colour, alpha = a[..., :-1], a[..., -1:]
  out = ((colour * alpha + 127) // 255).astype(np.uint8)
  return Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out, 'L' if out.shape[-1] == 1 else 'RGB')


def to_8bit(im: Image.Image, channels: int) -> Image.Image:
  """Any Pillow mode to 8-bit 'L' (channels=1) or 'RGB' (channels=3).

  16-bit and 32-bit integer images are scaled from [0, 65535] (not clipped at 255), float images from
  [0, 1] when their maximum is at most 1 and from [0, 255] otherwise; alpha is composited onto black;
  palette images are expanded through their palette; colour to gray uses ITU-R 601 luma.
  """
  mode = im.mode
  if mode.startswith('I'):  # I;16, I;16B, I;16L, I;16N, I (e.g. 16-bit PNG/TIFF)
    a = np.asarray(im).astype(np.float64)
    a = np.clip(a, 0, 65535) / 257.0
    im = Image.fromarray(np.rint(a).astype(np.uint8), 'L')
  elif mode == 'F':
    a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if a.size and a.max() <= 1.0:
      a = a * 255.0
    im = Image.fromarray(np.rint(np.clip(a, 0, 255)).astype(np.uint8), 'L')
  elif mode == '1':
    im = im.convert('L')
  elif mode in ('P', 'PA'):
    im = im.convert('RGBA')
  elif mode in ('LA', 'La'):
    im = im.convert('LA')
  elif mode not in ('L', 'RGB', 'RGBA', 'RGBa'):
    im = im.convert('RGB')  # CMYK, YCbCr, LAB, HSV, RGBX, ...
  if im.mode in ('RGBA', 'RGBa', 'LA'):
    im = composite_on_black(im.convert('RGBA' if im.mode == 'RGBa' else im.mode))
  if channels == 1 and im.mode != 'L':
    im = im.convert('L')
  elif channels == 3 and im.mode != 'RGB':
    im = im.convert('RGB')
  return im


def fit_image(im: Image.Image, image_size: int, resize: str) -> Image.Image:
  """Bring an 8-bit image to image_size × image_size.

  'resize': stretch to the square (aspect ratio not kept). 'center_crop': scale the shorter side down to
  image_size and cut the central square (images whose shorter side is below image_size are rejected:
  upscaling would invent detail). 'pad': scale the longer side to image_size and pad with black, centred.
  """
  s = image_size
  w, h = im.size
  if resize == 'resize':
    return im if (w, h) == (s, s) else im.resize((s, s), _RESAMPLE)
  if resize == 'center_crop':
    if min(w, h) < s:
      raise BadImageError(f'{w}x{h} is smaller than {s}x{s} (center_crop does not upscale)')
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    if (nw, nh) != (w, h):
      im = im.resize((nw, nh), _RESAMPLE)
    left, top = (nw - s) // 2, (nh - s) // 2
    return im.crop((left, top, left + s, top + s))
  if resize == 'pad':
    scale = s / max(w, h)
    nw, nh = min(s, max(1, round(w * scale))), min(s, max(1, round(h * scale)))
    if (nw, nh) != (w, h):
      im = im.resize((nw, nh), _RESAMPLE)
    canvas = Image.new(im.mode, (s, s), 0)
    canvas.paste(im, ((s - nw) // 2, (s - nh) // 2))
    return canvas
  raise ValueError(f'resize must be one of {RESIZE_POLICIES}, got {resize!r}')


def open_image(path: str, *, channels: int, draft_size: int | None = None) -> Image.Image:
  """Decode one file fully to an 8-bit 'L'/'RGB' image; any failure becomes a `BadImageError`.

  `draft_size` lets JPEGs decode at a reduced DCT scale while staying >= 2 × draft_size on both sides.
  EXIF orientation is applied; multi-frame files give their first frame.
  """
  try:
    if os.path.getsize(path) == 0:
      raise BadImageError('empty file (0 bytes)')
    with Image.open(path) as im:
      if draft_size and im.format == 'JPEG':
        target = int(draft_size * _REDUCING_GAP)
        im.draft(None, (target, target))
      im.load()
      im = ImageOps.exif_transpose(im)
      return to_8bit(im, channels)
  except BadImageError:
    raise
  except Image.UnidentifiedImageError:
    raise BadImageError('not a recognised image file') from None
  except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, struct.error, ValueError, ...
    raise BadImageError(f'cannot decode ({type(e).__name__}: {e})') from None


def decode_image(path: str, image_size: int, channels: int, resize: str) -> np.ndarray:
  """One file decoded and brought to image_size x image_size x channels uint8; failures are `BadImageError`."""
  try:
    im = open_image(path, channels=channels, draft_size=image_size)
    arr = np.asarray(fit_image(im, image_size, resize), dtype=np.uint8)
  except BadImageError:
    raise
  except Exception as e:  # noqa: BLE001 - e.g. a resize on a degenerate image
    raise BadImageError(f'cannot process ({type(e).__name__}: {e})') from None
  return arr.reshape(image_size, image_size, channels)


def check_settings(image_size: int, channels: int, resize: str, on_error: str) -> None:
  """Raises ValueError naming the first bad decode setting."""
  if not isinstance(image_size, (int, np.integer)) or image_size < 1:
    raise ValueError(f'image_size must be a positive int, got {image_size!r}')
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, got {channels!r}')
  if resize not in RESIZE_POLICIES:
    raise ValueError(f'resize must be one of {RESIZE_POLICIES}, got {resize!r}')
  if on_error not in ON_ERROR:
    raise ValueError(f'on_error must be one of {ON_ERROR}, got {on_error!r}')
