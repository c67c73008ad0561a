"""The one-class baseline practitioners reach for when defects are rare: an encoder/decoder trained on OK images
only, an image's anomaly score being its eval-mode reconstruction error -- the largest mean squared error of any
`config.pipeline.anomaly_window`-sized square window (0: the whole image's mean), so a small defect counts.

The scores become the same `predictions.npz` the classifiers write, so every table, threshold and interval of
the report applies unchanged. P(NG) = sigmoid((log e - log q) / s), with q the `OK_QUANTILE` quantile of the
validation OK images' errors and s the spread (std) of their logs: a monotone map, so ROC/PR curves and the
recall-first threshold see the raw ranking, and the argmax decision flags an image whose error exceeds that share
of validation OK errors (about 5 % overkill by construction, whatever the NG recall).

With tiles (`config.data.patches.mode` 'tiles' / 'defect_crops') the encoder/decoder learns the OK images'
tiles, and an image's error is the mean of its `top_k` highest tile errors, pooled as the tile classifiers pool
their scores: every decision and metric stays per image.
"""

from __future__ import annotations

import functools
import os
import pathlib
import time

import numpy as np

from deepsmote_jax import files
from deepsmote_jax.data import tiles as tiles_lib
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.export import load_autoencoder
from deepsmote_jax.jobs import prepare_data, stage, tiled
from deepsmote_jax.jobs.classifier_setup import RUN_INFO
from deepsmote_jax.jobs.predict import PREDICTIONS_CSV, save_validation_decision, write_run_predictions
from deepsmote_jax.jobs.train_autoencoder import train_and_export
from deepsmote_jax.train.autoencoder import decode_codes, encode_images

METHODS = ("anomaly_ae",)
OK_QUANTILE = 0.95


def reconstruction_error(model, images_u8: np.ndarray, window: int = 0, *, chunk: int = 256) -> np.ndarray:
  """Per-image error of the eval-mode reconstruction, in [0, 1] pixel units: with `window` = 0 the mean squared
  error over the image; with `window` = w > 0 the largest mean squared error of any w x w window (a small
  defect is not averaged away by the rest of the image)."""
  images_u8 = np.asarray(images_u8)
  side = min(images_u8.shape[1:3]) if images_u8.ndim == 4 else 0
  if not 0 <= int(window) <= side:
    raise ValueError(f"config.pipeline.anomaly_window={window}: must be in [0, {side}] (the images are {side} px)")
  recon = decode_codes(model, encode_images(model, images_u8), channels=images_u8.shape[-1])
  out = np.empty(len(images_u8), np.float64)
  for i in range(0, len(images_u8), chunk):  # bounded memory: a float64 error map per chunk
    diff = (recon[i : i + chunk].astype(np.float64) - images_u8[i : i + chunk]) / 255.0
    out[i : i + chunk] = window_error((diff**2).mean(-1), int(window))
  return out


def window_error(squared: np.ndarray, window: int) -> np.ndarray:
  """(N,) from (N, H, W) squared errors: the mean (window 0) or the largest w x w window mean (summed-area
  table, stride 1)."""
  if window == 0:
    return squared.reshape(len(squared), -1).mean(1)
  table = np.pad(squared.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
  w = window
  sums = table[:, w:, w:] - table[:, :-w, w:] - table[:, w:, :-w] + table[:, :-w, :-w]
  return sums.reshape(len(sums), -1).max(1) / (w * w)


def error_to_proba(errors: np.ndarray, ok_errors: np.ndarray, class_names: list[str], ok: str, ng: str) -> np.ndarray:
  """(N, C) scores in class order: P(NG) from the error (see the module docstring), 1 - P(NG) on OK, 0 elsewhere."""
  if len(ok_errors) < 2:
    raise ValueError(f"the one-class baseline needs >= 2 validation {ok!r} images to scale its scores")
  log_ok = np.log(np.maximum(ok_errors, 1e-12))
  centre = np.quantile(log_ok, OK_QUANTILE)
  spread = max(float(np.std(log_ok)), 1e-6)
  z = (np.log(np.maximum(errors, 1e-12)) - centre) / spread
  p_ng = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
  proba = np.zeros((len(errors), len(class_names)), np.float32)
  proba[:, class_names.index(ng)] = p_ng
  proba[:, class_names.index(ok)] = 1.0 - p_ng
  return proba


def ok_only(train: ImageSet, ok: str) -> ImageSet:
  """The OK images of `train` as a one-class set (the autoencoder never sees a defect)."""
  if ok not in train.class_names:
    raise ValueError(f"config.imbalance.ok_class={ok!r} is not a class of the data {train.class_names}")
  keep = np.flatnonzero(train.labels == train.class_names.index(ok))
  return ImageSet(
    images=train.images[keep],
    labels=np.zeros(len(keep), np.int32),
    class_names=[ok],
    files=[train.files[i] for i in keep],
  )


def tile_errors(model, split: tiles_lib.TiledSplit, top_k: int, window: int = 0) -> np.ndarray:
  """(n_images,) an image's anomaly score from its tiles: the mean of its `top_k` highest tile errors, as the
  tile classifiers pool tile NG probabilities (`tiled.image_proba`)."""
  errors = reconstruction_error(model, split.tiles.images, window)
  return tiles_lib.aggregate(errors, split.bag, len(split.image_files), int(top_k))


def _scored_splits(config, work: pathlib.Path, ok: str) -> tuple[ImageSet, str, list[str], dict]:
  """(OK-only training set, what it holds, class names, {split: (image files, image labels, model -> per-image
  errors)}).

  Whole images (`data.patches.mode='none'`): the OK training images; validation and test images as they are.
  Tiles: the tiles of the OK training images (an NG image's other tiles are not safe OK, so none is used);
  validation and test images scored from their tiles (`tile_errors`)."""
  window = int(config.pipeline.anomaly_window)
  if tiled.is_tiled(config):
    train, *held_out = (prepare_data.load_tiled_split(work / "data", n) for n in prepare_data.SPLITS)
    top_k = int(prepare_data.tile_settings(config).top_k)
    parts = {
      name: (s.image_files, s.image_labels, functools.partial(tile_errors, split=s, top_k=top_k, window=window))
      for name, s in zip(("validation", "test"), held_out)
    }
    return ok_only(train.tiles, ok), "tiles", list(train.tiles.class_names), parts
  train = prepare_data.training_split(config, work / "data")
  parts = {}
  for name in ("validation", "test"):
    s = prepare_data.load_split(work / "data", name)
    parts[name] = (s.files, s.labels, functools.partial(reconstruction_error, images_u8=s.images, window=window))
  return ok_only(train, ok), "images", list(train.class_names), parts


def score_description(config) -> str:
  """What a one-class run's error is, in words (its run.json)."""
  w = int(config.pipeline.anomaly_window)
  of = "the tile" if tiled.is_tiled(config) else "the image"
  out = f"reconstruction error ([0, 1] pixels): {f'largest {w}x{w} window MSE' if w else 'MSE'} of {of}"
  if tiled.is_tiled(config):
    out += f"; an image's: mean of its top {int(prepare_data.tile_settings(config).top_k)} tiles"
  return out


def train_one(config, work: pathlib.Path, method: str, seed: int, run_dir: pathlib.Path, *, progress: bool) -> dict:
  """Trains the OK-only encoder/decoder (config.model / config.train, no penalty) and scores validation and
  test images (from their tiles when `data.patches.mode` tiles them); writes `predictions.npz` (as the
  classifiers do) with the raw errors beside, and `predictions.csv` (file, split, scores, decisions)."""
  if method not in METHODS:
    raise ValueError(f"unknown one-class method {method!r}; known: {list(METHODS)}")
  ok, ng = config.imbalance.ok_class, config.pipeline.positive_class
  normal, what, class_names, parts = _scored_splits(config, work, ok)
  if not ng or ng not in class_names:
    raise ValueError(f"the one-class baseline needs config.pipeline.positive_class (got {ng!r}) among {class_names}")
  if not (parts["validation"][1] == class_names.index(ng)).any():
    raise ValueError(f"config.pipeline.positive_class={ng!r} has no image in the validation split")
  stage.log(f"one-class {method} / seed {seed}: autoencoder on {len(normal)} {ok!r} {what} only")
  t0 = time.perf_counter()
  cfg = config.copy_and_resolve_references()
  cfg.train.penalty = "none"
  cfg.train.seed = int(seed)
  summary = train_and_export(cfg, str(run_dir / "autoencoder_ok"), progress=progress, image_set=normal)
  model, _ = load_autoencoder(run_dir / "autoencoder_ok" / "autoencoder")
  errors = {name: score(model) for name, (_, _, score) in parts.items()}
  val_labels = parts["validation"][1]
  ok_val = errors["validation"][val_labels == class_names.index(ok)]
  proba = {n: error_to_proba(e, ok_val, class_names, ok, ng) for n, e in errors.items()}
  tmp = run_dir / "predictions.tmp.npz"
  np.savez(
    tmp,
    val_proba=proba["validation"],
    val_labels=val_labels,
    test_proba=proba["test"],
    test_labels=parts["test"][1],
    class_names=np.array(class_names, dtype=object),
    val_error=errors["validation"],
    test_error=errors["test"],
  )
  os.replace(tmp, run_dir / "predictions.npz")
  decision = save_validation_decision(run_dir, config.pipeline, val_labels, proba["validation"], class_names)
  rows = {name: (image_files, labels, proba[name]) for name, (image_files, labels, _) in parts.items()}
  write_run_predictions(run_dir / PREDICTIONS_CSV, rows, class_names, decision)
  info = {
    "method": method,
    "seed": int(seed),
    "train_counts": {ok: len(normal)},
    "best_step": summary.get("final_step"),
    "score": score_description(config),
    "wall_s": time.perf_counter() - t0,
  }
  files.atomic_write_json(run_dir / RUN_INFO, info)
  return info
