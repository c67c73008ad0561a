"""Decoding one image file: any Pillow mode to 8-bit gray or RGB, and a resize policy to a square size.

Shared by the folder loader, mask-guided patches, ELPV, TFDS and the tf.data pipeline, so every source
turns pixels into model input the same way. NumPy and Pillow only.

Lossy but usable conversions (real transparency composited on black, 16-bit or float pixels scaled to
8 bits, CMYK and other colour spaces converted to RGB, the first frame of a multi-frame file) are
appended as short texts to an optional `notes` list so the caller can count and report them; lossless
ones (palette, bilevel, opaque alpha, EXIF rotation) are not. Files far smaller than the target
(`check_not_tiny`) are a `BadImageError`: stretched up they would be mostly invented pixels.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

RESIZE_POLICIES = ("resize", "center_crop", "pad")
ON_ERROR = ("raise", "skip")
# Pillow's BILINEAR widens its kernel by the scale factor when shrinking, i.e. it averages over the
# source area (no aliasing), and interpolates bilinearly when enlarging.
_RESAMPLE = Image.Resampling.BILINEAR
# JPEGs are first decoded at a reduced DCT scale, but kept at least this many times the target size so the
# final (antialiased) resize still sees enough pixels; the same rule as Pillow's `thumbnail`.
_REDUCING_GAP = 2.0
# A file whose shorter side is below 1/TINY_FACTOR of the target side is rejected (see `check_not_tiny`).
TINY_FACTOR = 4

NOTE_ALPHA = "alpha composited on black"
NOTE_16BIT = "16-bit scaled to 8-bit (x/257)"
NOTE_FLOAT = "float pixels scaled to 8-bit"
NOTE_FRAMES = "multi-frame file: first frame used"


class BadImageError(ValueError):
  """An input file that cannot be used (corrupt, not an image, too small, ...)."""


def composite_on_black(im: Image.Image) -> Image.Image:
  """RGBA/LA to RGB/L with transparent areas black (alpha premultiplied), not their arbitrary colour."""
  a = np.asarray(im, dtype=np.uint16)
  colour, alpha = a[..., :-1], a[..., -1:]
  out = ((colour * alpha + 127) // 255).astype(np.uint8)
  return Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out, "L" if out.shape[-1] == 1 else "RGB")


def _note(notes: list[str] | None, text: str) -> None:
  if notes is not None:
    notes.append(text)


def to_8bit(im: Image.Image, channels: int, notes: list[str] | None = None) -> Image.Image:
  """Any Pillow mode to 8-bit 'L' (channels=1) or 'RGB' (channels=3).

  16-bit and 32-bit integer images are scaled from [0, 65535] (not clipped at 255), float images from
  [0, 1] when their maximum is at most 1 and from [0, 255] otherwise; alpha is composited onto black;
  palette images are expanded through their palette; colour to gray uses ITU-R 601 luma. Lossy steps
  are appended to `notes` (see the module docstring); alpha only when some pixel is transparent.
  """
  mode = im.mode
  if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (e.g. 16-bit PNG/TIFF)
    a = np.asarray(im).astype(np.float64)
    a = np.clip(a, 0, 65535) / 257.0
    im = Image.fromarray(np.rint(a).astype(np.uint8), "L")
    _note(notes, NOTE_16BIT)
  elif mode == "F":
    a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if a.size and a.max() <= 1.0:
      a = a * 255.0
    im = Image.fromarray(np.rint(np.clip(a, 0, 255)).astype(np.uint8), "L")
    _note(notes, NOTE_FLOAT)
  elif mode == "1":
    im = im.convert("L")
  elif mode in ("P", "PA"):
    im = im.convert("RGBA")
  elif mode in ("LA", "La"):
    im = im.convert("LA")
  elif mode not in ("L", "RGB", "RGBA", "RGBa"):
    im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...
    _note(notes, f"{mode} converted to RGB")
  if im.mode in ("RGBA", "RGBa", "LA"):
    im = im.convert("RGBA" if im.mode == "RGBa" else im.mode)
    if im.getchannel("A").getextrema()[0] < 255:
      im = composite_on_black(im)
      _note(notes, NOTE_ALPHA)
    else:  # opaque: dropping alpha changes nothing
      im = im.convert("L" if im.mode == "LA" else "RGB")
  if channels == 1 and im.mode != "L":
    im = im.convert("L")
  elif channels == 3 and im.mode != "RGB":
    im = im.convert("RGB")
  return im


def fit_image(im: Image.Image, image_size: int, resize: str) -> Image.Image:
  """Bring an 8-bit image to image_size × image_size.

  'resize': stretch to the square (aspect ratio not kept). 'center_crop': scale the shorter side down to
  image_size and cut the central square (images whose shorter side is below image_size are rejected:
  upscaling would invent detail). 'pad': scale the longer side to image_size and pad with black, centred.
  """
  s = image_size
  w, h = im.size
  if resize == "resize":
    return im if (w, h) == (s, s) else im.resize((s, s), _RESAMPLE)
  if resize == "center_crop":
    if min(w, h) < s:
      raise BadImageError(f"{w}x{h} is smaller than {s}x{s} (center_crop does not upscale)")
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    if (nw, nh) != (w, h):
      im = im.resize((nw, nh), _RESAMPLE)
    left, top = (nw - s) // 2, (nh - s) // 2
    return im.crop((left, top, left + s, top + s))
  if resize == "pad":
    scale = s / max(w, h)
    nw, nh = min(s, max(1, round(w * scale))), min(s, max(1, round(h * scale)))
    if (nw, nh) != (w, h):
      im = im.resize((nw, nh), _RESAMPLE)
    canvas = Image.new(im.mode, (s, s), 0)
    canvas.paste(im, ((s - nw) // 2, (s - nh) // 2))
    return canvas
  raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")


def check_not_tiny(size: tuple[int, int], target: int) -> None:
  """Raises `BadImageError` for an image far smaller than the target square (the model's or a patch's side).

  Tiny: the shorter side is below target / TINY_FACTOR (e.g. under 16 px for 64×64), or the image is a
  single row or column (1×1 included) while the target is larger. Stretched or padded to the target such
  an image is mostly invented pixels or border: a training sample in name only.
  """
  w, h = size
  short = min(w, h)
  if short * TINY_FACTOR < target or (short == 1 and target > 1):
    raise BadImageError(
      f"image is {w}x{h}, far smaller than the {target}x{target} target "
      f"(shorter side {short} px < {target}/{TINY_FACTOR}): it would be mostly invented pixels"
    )


def open_image(
  path: str, *, channels: int, draft_size: int | None = None, notes: list[str] | None = None
) -> Image.Image:
  """Decode one file fully to an 8-bit 'L'/'RGB' image; any failure becomes a `BadImageError`.

  `draft_size` lets JPEGs decode at a reduced DCT scale while staying >= 2 × draft_size on both sides
  (never below draft_size, so `check_not_tiny` sees the same verdict). EXIF orientation is applied;
  multi-frame files give their first frame. Lossy conversions are appended to `notes`.
  """
  try:
    if os.path.getsize(path) == 0:
      raise BadImageError("empty file (0 bytes)")
    with Image.open(path) as im:
      if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
        _note(notes, NOTE_FRAMES)
      if draft_size and im.format == "JPEG":
        target = int(draft_size * _REDUCING_GAP)
        im.draft(None, (target, target))
      im.load()
      im = ImageOps.exif_transpose(im)
      return to_8bit(im, channels, notes)
  except BadImageError:
    raise
  except Image.UnidentifiedImageError:
    raise BadImageError("not a recognised image file") from None
  except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, struct.error, ValueError, ...
    raise BadImageError(f"cannot decode ({type(e).__name__}: {e})") from None


def decode_image(path: str, image_size: int, channels: int, resize: str, notes: list[str] | None = None) -> np.ndarray:
  """One file decoded and brought to image_size x image_size x channels uint8; failures are `BadImageError`.

  Tiny files (`check_not_tiny`) are failures too; lossy conversions are appended to `notes`.
  """
  try:
    im = open_image(path, channels=channels, draft_size=image_size, notes=notes)
    check_not_tiny(im.size, image_size)
    arr = np.asarray(fit_image(im, image_size, resize), dtype=np.uint8)
  except BadImageError:
    raise
  except Exception as e:  # noqa: BLE001 - e.g. a resize on a degenerate image
    raise BadImageError(f"cannot process ({type(e).__name__}: {e})") from None
  return arr.reshape(image_size, image_size, channels)


def check_settings(image_size: int, channels: int, resize: str, on_error: str) -> None:
  """Raises ValueError naming the first bad decode setting."""
  if not isinstance(image_size, (int, np.integer)) or image_size < 1:
    raise ValueError(f"image_size must be a positive int, got {image_size!r}")
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels!r}")
  if resize not in RESIZE_POLICIES:
    raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
