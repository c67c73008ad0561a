"""One entry point from a `config.data` block to an in-memory `ImageSet` (folder, ELPV or a TFDS name)."""

from __future__ import annotations

from deepsmote_jax.data.elpv import load_elpv
from deepsmote_jax.data.file_images import check_stream_cache
from deepsmote_jax.data.folder import ImageSet, list_image_folder, load_image_folder
from deepsmote_jax.data.tfds_datasets import load_tfds

SOURCES = ("folder", "elpv", "tfds")
STREAM = ("auto", "true", "false")


def load_source(data_cfg, *, image_size: int, channels: int) -> ImageSet:
  """Loads `data_cfg.source` ('folder' needs `data_cfg.root`) at the model's size and channels."""
  source = data_cfg.get("source", "folder")
  cache = stream_cache_setting(data_cfg)
  if source == "folder":
    root = data_cfg.get("root") or ""
    if not root:
      raise ValueError("config.data.root is empty: set --config.data.root=/path/to/images (one subfolder per class)")
    classes = data_cfg.get("classes") or None
    classes = list(classes) if classes else None
    return load_image_folder(
      root,
      image_size=image_size,
      channels=channels,
      resize=data_cfg.get("resize", "resize"),
      on_error=data_cfg.get("on_error", "raise"),
      min_per_class=data_cfg.get("min_per_class", 2),
      classes=classes,
      stream=streams(data_cfg, lambda: len(list_image_folder(root, classes=classes)[1]) * image_size**2 * channels),
      stream_cache=cache,
    )
  if stream_setting(data_cfg) == "true":
    raise ValueError(f"config.data.stream=true streams image folders only, not config.data.source={source!r}")
  if source == "elpv":
    return load_elpv(
      image_size=image_size, channels=channels, include_intermediate=data_cfg.get("include_intermediate", False)
    )
  if source == "tfds":
    return load_tfds(
      data_cfg.name,
      split=data_cfg.get("split", "train"),
      image_size=image_size,
      channels=channels,
      data_dir=data_cfg.get("data_dir") or None,
    )
  raise ValueError(f"config.data.source={source!r}: choose one of {SOURCES}")


def stream_setting(data_cfg) -> str:
  """`config.data.stream` as 'auto' | 'true' | 'false' (booleans accepted)."""
  value = data_cfg.get("stream", "auto")
  value = {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else str(value).lower()
  if value not in STREAM:
    raise ValueError(f"config.data.stream={value!r}: choose one of {STREAM}")
  return value


def streams(data_cfg, decoded_bytes) -> bool:
  """Whether a folder is streamed: forced by `config.data.stream`, or ('auto') when `decoded_bytes()` (the
  size of the whole set decoded at the model's size) exceeds `config.data.stream_budget_mb`."""
  setting = stream_setting(data_cfg)
  if setting != "auto":
    return setting == "true"
  budget = float(data_cfg.get("stream_budget_mb", 4096))
  if budget <= 0:
    raise ValueError(f"config.data.stream_budget_mb={budget:g} must be > 0")
  return decoded_bytes() > budget * 2**20


def stream_cache_setting(data_cfg) -> str:
  """`config.data.stream_cache`: where a stream keeps the images it decoded, read back in later epochs instead
  of decoding them again -- 'disk' (default: a file under $TMPDIR), 'off', or an existing directory."""
  return check_stream_cache(data_cfg.get("stream_cache", "disk"), "config.data.stream_cache")
