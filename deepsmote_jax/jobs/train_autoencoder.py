"""The encoder/decoder training job: load the data, train, checkpoint, export, write reconstruction grids.

The standalone job (`deepsmote train-autoencoder`) trains on the training split of the data stage only (its
own `<workdir>/data`, or an earlier run's with `--split DIR`), as the pipeline does, so no validation or test
image reaches the autoencoder; `<workdir>/training_data.json` lists the files it trained on and the split.
With validation images (the data stage's validation split; for an image set given in memory without them,
`train.val_fraction` of each class held out) the exported autoencoder is the best state by validation PSNR /
SSIM (`train.select_metric`), and its per-class scores are in train_summary.json and the export's meta.json.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from deepsmote_jax import config_lib, files, visualize
from deepsmote_jax.data import splits
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.export import export_autoencoder
from deepsmote_jax.jobs import prepare_data, stage
from deepsmote_jax.jobs.lock import WorkdirLock
from deepsmote_jax.models import presets as presets_lib
from deepsmote_jax.models.autoencoder import build_autoencoder, summary
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


def layer_summary(config) -> str:
  """`deepsmote summary`: the layers, output shapes and parameter counts of `config.model`'s encoder/decoder
  (the paper's tables)."""
  return summary(build_autoencoder(model_spec(config)))


def train_and_export(
  config,
  workdir: str,
  *,
  resume: bool = False,
  overwrite: bool = False,
  progress: bool = True,
  image_set=None,
  val_set: ImageSet | None = None,
  split: str | os.PathLike | None = None,
) -> dict:
  """`deepsmote train-autoencoder`: split the data, train, checkpoint, export, write reconstruction grids.

  Without `image_set`, the images are the training split of the data stage: `split` (an earlier run's data
  folder, checked against the config) or the stage run into `<workdir>/data`; the validation split scores
  every epoch and picks the exported state; `training_data.json` records the split and the files used.
  Outputs in `workdir`: metrics.jsonl, checkpoints/, autoencoder/ (the export other scripts load),
  reconstructions.png (training inputs beside eval-mode reconstructions), val_reconstructions.png (the same
  for validation images, a row per class), train_summary.json. `val_set` (same classes as the training
  images) scores every epoch and picks the exported state; without it, `train.val_fraction` > 0 holds out
  that share of each class. The workdir is locked for the run; checkpoints of another run there are refused
  unless `resume` (same settings and data) or `overwrite`.
  """
  with WorkdirLock(workdir):
    return _train_and_export(config, pathlib.Path(workdir), resume, overwrite, progress, image_set, val_set, split)


def _from_split(config, work: pathlib.Path, split) -> tuple[ImageSet, ImageSet | None, dict]:
  """(training split, validation split or None, the split's record) of the data stage."""
  data_dir = prepare_data.ensure(config, work, split)
  train = prepare_data.training_split(config, data_dir)
  val = prepare_data.load_split(data_dir, "validation")
  if not len(val) or val.images.shape[1:] != train.images.shape[1:]:
    stage.log("autoencoder: no validation images of the training size in the split")
    val = None
  return train, val, prepare_data.split_record(data_dir)


def _train_and_export(
  config, work: pathlib.Path, resume: bool, overwrite: bool, progress: bool, image_set, val_set, split
) -> dict:
  train_cfg = config_lib.to_dataclass(AETrainConfig, config.train, "train")
  spec = model_spec(config)
  dtype = compute_dtype(train_cfg.compute_dtype)
  split_info = None
  if image_set is None:
    # Without validation images of the training size, train.val_fraction (if any) is held out of the training split.
    image_set, val_set, split_info = _from_split(config, work, split)
  elif split:
    raise ValueError("give either an image set or a split folder, not both")
  image_set, val_set = _validation_split(config, train_cfg, image_set, val_set)
  _check_class_sizes(image_set)
  model = build_autoencoder(spec, dtype=dtype, seed=train_cfg.seed)
  result = train_autoencoder(
    model,
    image_set.images,
    image_set.labels,
    train_cfg,
    num_classes=len(image_set.class_names),
    val=(val_set.images, val_set.labels) if val_set is not None else None,
    workdir=str(work),
    checkpoint_every_steps=int(config.checkpoint.every_steps),
    keep_checkpoints=int(config.checkpoint.keep),
    resume=resume,
    overwrite=overwrite,
    progress=progress,
    metadata={"preset": spec.name, "class_names": list(image_set.class_names)},
  )
  val_summary = _per_class(result.summary, image_set.class_names, val_set)
  trained_on = None
  if split_info is not None:
    trained_on = {k: split_info[k] for k in ("dir", "manifest", "manifest_digest", "root")} | {"split": "train"}
    files.atomic_write_json(
      work / "training_data.json",
      {
        **trained_on,
        "train_files": list(image_set.files),
        "validation_files": list(val_set.files) if val_set is not None else [],
      },
    )
  export_dir = export_autoencoder(
    result.best_model,
    work / "autoencoder",
    class_names=image_set.class_names,
    extra={
      "train": dataclasses.asdict(train_cfg),
      "summary": result.summary,
      "validation": val_summary,
      "data_split": trained_on,
    },
  )
  _reconstruction_grids(result.best_model, image_set, val_set, work, train_cfg.seed)
  summary = {
    **result.summary,
    "export": str(export_dir),
    "num_images": int(len(image_set.images)),
    "class_counts": {k: int(v) for k, v in image_set.counts().items()},
    "validation": val_summary,
    "data_split": trained_on,
  }
  files.atomic_write_json(work / "train_summary.json", summary)
  return summary


def _validation_split(config, train_cfg: AETrainConfig, image_set: ImageSet, val_set: ImageSet | None):
  """(training images, validation images or None): `val_set` checked, or `train.val_fraction` held out."""
  if val_set is not None:
    if list(val_set.class_names) != list(image_set.class_names):
      raise ValueError(f"validation classes {val_set.class_names} differ from training classes {image_set.class_names}")
    return image_set, (val_set if len(val_set) else None)
  fraction = float(train_cfg.val_fraction)
  if not fraction:
    return image_set, None
  split = config.get("split") or {}
  parts = splits.split_image_set(
    image_set,
    (1 - fraction, fraction),
    seed=int(train_cfg.seed),
    group_pattern=split.get("group_pattern") or None,
    names=("train", "validation"),
  )
  if not len(parts["validation"]):
    raise ValueError(f"config.train.val_fraction={fraction} holds out no image of {len(image_set)}; raise it")
  return parts["train"], parts["validation"]


def _per_class(summary: dict, class_names: list[str], val_set: ImageSet | None) -> dict | None:
  """The selected state's validation scores by class name (None without validation images)."""
  scores = summary.get("best_val")
  if val_set is None or not scores:
    return None
  return {
    "select_metric": summary.get("select_metric"),
    "step": summary.get("best_step"),
    "images": val_set.counts(),
    "psnr": scores["psnr"],
    "ssim": scores["ssim"],
    "psnr_per_class": dict(zip(class_names, scores["psnr_per_class"])),
    "ssim_per_class": dict(zip(class_names, scores["ssim_per_class"])),
  }


def _reconstruction_grids(model, image_set: ImageSet, val_set: ImageSet | None, work: pathlib.Path, seed: int):
  """reconstructions.png (16 training images) and val_reconstructions.png (a row of up to 4 per class)."""
  channels = image_set.images.shape[-1]
  rng = np.random.default_rng(seed)
  show = rng.choice(len(image_set.images), size=min(16, len(image_set.images)), replace=False)
  recon = decode_codes(model, encode_images(model, image_set.images[show]), channels=channels)
  visualize.side_by_side(image_set.images[show], recon, work / "reconstructions.png")
  if val_set is None:
    return
  show = [np.flatnonzero(val_set.labels == c)[:4] for c in range(len(val_set.class_names))]
  picked = np.concatenate(show)
  recon = decode_codes(model, encode_images(model, val_set.images[picked]), channels=channels)
  blank = np.full((1,) + val_set.images.shape[1:], 255, np.uint8)
  left, right, at = [], [], 0
  for rows in (r for r in show if len(r)):  # one grid row per class present, padded to 4 pairs
    pad = [blank] * (4 - len(rows))
    left += [val_set.images[rows], *pad]
    right += [recon[at : at + len(rows)], *pad]
    at += len(rows)
  visualize.side_by_side(np.concatenate(left), np.concatenate(right), work / "val_reconstructions.png")


def _check_class_sizes(image_set) -> None:
  counts = image_set.counts()
  small = {k: v for k, v in counts.items() if v < 2}
  if small:
    raise ValueError(
      f"class folder(s) with fewer than 2 images: {small}; DeepSMOTE needs at least 2 per class "
      f"(remove the class or add images)"
    )
