"""The encoder/decoder training job: load the data, train, checkpoint, export, write a reconstruction grid."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from deepsmote_jax import config_lib, files, visualize
from deepsmote_jax.data.sources import load_source
from deepsmote_jax.export import export_autoencoder
from deepsmote_jax.jobs.lock import WorkdirLock
from deepsmote_jax.models import presets as presets_lib
from deepsmote_jax.models.autoencoder import build_autoencoder
from deepsmote_jax.train.autoencoder import AETrainConfig, decode_codes, encode_images, train_autoencoder
from deepsmote_jax.train.precision import compute_dtype


def model_spec(config) -> presets_lib.AutoencoderSpec:
  """The encoder/decoder `config.model` names: a preset with its input (and optionally output) channels."""
  model = config.model
  spec = presets_lib.get_preset(
    model.preset, channels=int(model.channels), out_channels=int(model.get("out_channels", 0)) or None
  )
  presets_lib.validate(spec)
  return spec


def train_and_export(
  config, workdir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True, image_set=None
) -> dict:
  """The `scripts/train_autoencoder.py` job: load data, train, checkpoint, export, write a reconstruction grid.

  Outputs in `workdir`: metrics.jsonl, checkpoints/, autoencoder/ (the export other scripts load),
  reconstructions.png (inputs beside eval-mode reconstructions), train_summary.json. The workdir is locked
  for the run; checkpoints of another run there are refused unless `resume` (same settings and data) or
  `overwrite`.
  """
  with WorkdirLock(workdir):
    return _train_and_export(config, pathlib.Path(workdir), resume, overwrite, progress, image_set)


def _train_and_export(config, work: pathlib.Path, resume: bool, overwrite: bool, progress: bool, image_set) -> dict:
  train_cfg = config_lib.to_dataclass(AETrainConfig, config.train, "train")
  spec = model_spec(config)
  dtype = compute_dtype(train_cfg.compute_dtype)
  if image_set is None:
    image_set = load_source(config.data, image_size=spec.image_size, channels=spec.channels)
  _check_class_sizes(image_set)
  model = build_autoencoder(spec, dtype=dtype, seed=train_cfg.seed)
  result = train_autoencoder(
    model,
    image_set.images,
    image_set.labels,
    train_cfg,
    num_classes=len(image_set.class_names),
    workdir=str(work),
    checkpoint_every_steps=int(config.checkpoint.every_steps),
    keep_checkpoints=int(config.checkpoint.keep),
    resume=resume,
    overwrite=overwrite,
    progress=progress,
    metadata={"preset": spec.name, "class_names": list(image_set.class_names)},
  )
  export_dir = export_autoencoder(
    result.model,
    work / "autoencoder",
    class_names=image_set.class_names,
    extra={"train": dataclasses.asdict(train_cfg), "summary": result.summary},
  )
  rng = np.random.default_rng(train_cfg.seed)
  show = rng.choice(len(image_set.images), size=min(16, len(image_set.images)), replace=False)
  recon = decode_codes(
    result.model, encode_images(result.model, image_set.images[show]), channels=image_set.images.shape[-1]
  )
  visualize.side_by_side(image_set.images[show], recon, work / "reconstructions.png")
  summary = {
    **result.summary,
    "export": str(export_dir),
    "num_images": int(len(image_set.images)),
    "class_counts": {k: int(v) for k, v in image_set.counts().items()},
  }
  files.atomic_write_json(work / "train_summary.json", summary)
  return summary


def _check_class_sizes(image_set) -> None:
  counts = image_set.counts()
  small = {k: v for k, v in counts.items() if v < 2}
  if small:
    raise ValueError(
      f"class folder(s) with fewer than 2 images: {small}; DeepSMOTE needs at least 2 per class "
      f"(remove the class or add images)"
    )
