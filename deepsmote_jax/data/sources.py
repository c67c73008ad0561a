"""One entry point from a `config.data` block to an in-memory `ImageSet` (folder, ELPV or a TFDS name)."""

from __future__ import annotations

from deepsmote_jax.data.elpv import load_elpv
from deepsmote_jax.data.folder import ImageSet, load_image_folder
from deepsmote_jax.data.tfds_datasets import load_tfds

SOURCES = ("folder", "elpv", "tfds")


def load_source(data_cfg, *, image_size: int, channels: int) -> ImageSet:
  """Loads `data_cfg.source` ('folder' needs `data_cfg.root`) at the model's size and channels."""
  source = data_cfg.get("source", "folder")
  if source == "folder":
    root = data_cfg.get("root") or ""
    if not root:
      raise ValueError("config.data.root is empty: set --config.data.root=/path/to/images (one subfolder per class)")
    classes = data_cfg.get("classes") or None
    return load_image_folder(
      root,
      image_size=image_size,
      channels=channels,
      resize=data_cfg.get("resize", "resize"),
      on_error=data_cfg.get("on_error", "raise"),
      min_per_class=data_cfg.get("min_per_class", 2),
      classes=list(classes) if classes else None,
    )
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
