"""The one-class baseline practitioners reach for when defects are rare: an encoder/decoder trained on OK images
only, an image's anomaly score being its eval-mode reconstruction error.

The scores become the same `predictions.npz` the classifiers write, so every table, threshold and interval of
the report applies unchanged. P(NG) = sigmoid((log e - log q) / s), with q the `OK_QUANTILE` quantile of the
validation OK images' errors and s the spread (std) of their logs: a monotone map, so ROC/PR curves and the
recall-first threshold see the raw ranking, and the argmax decision flags an image whose error exceeds that share
of validation OK errors (about 5 % overkill by construction, whatever the NG recall).
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np

from deepsmote_jax import files
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.export import load_autoencoder
from deepsmote_jax.jobs import prepare_data, stage
from deepsmote_jax.jobs.classifier_setup import RUN_INFO
from deepsmote_jax.jobs.train_autoencoder import train_and_export
from deepsmote_jax.train.autoencoder import decode_codes, encode_images

METHODS = ("anomaly_ae",)
OK_QUANTILE = 0.95


def reconstruction_error(model, images_u8: np.ndarray) -> np.ndarray:
  """Per-image mean squared error, in [0, 1] pixel units, of the eval-mode reconstruction."""
  images_u8 = np.asarray(images_u8)
  recon = decode_codes(model, encode_images(model, images_u8), channels=images_u8.shape[-1])
  diff = (recon.astype(np.float32) - images_u8.astype(np.float32)) / 255.0
  return np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)


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


def train_one(config, work: pathlib.Path, method: str, seed: int, run_dir: pathlib.Path, *, progress: bool) -> dict:
  """Trains the OK-only encoder/decoder (config.model / config.train, no penalty) and scores validation and
  test; writes `predictions.npz` (as the classifiers do) with the raw errors beside."""
  if method not in METHODS:
    raise ValueError(f"unknown one-class method {method!r}; known: {list(METHODS)}")
  ok, ng = config.imbalance.ok_class, config.pipeline.positive_class
  train = prepare_data.training_split(config, work / "data")
  val = prepare_data.load_split(work / "data", "validation")
  test = prepare_data.load_split(work / "data", "test")
  class_names = list(val.class_names)
  if not ng or ng not in class_names:
    raise ValueError(f"the one-class baseline needs config.pipeline.positive_class (got {ng!r}) among {class_names}")
  normal = ok_only(train, ok)
  stage.log(f"one-class {method} / seed {seed}: autoencoder on {len(normal)} {ok!r} images only")
  t0 = time.perf_counter()
  cfg = config.copy_and_resolve_references()
  cfg.train.penalty = "none"
  cfg.train.seed = int(seed)
  summary = train_and_export(cfg, str(run_dir / "autoencoder_ok"), progress=progress, image_set=normal)
  model, _ = load_autoencoder(run_dir / "autoencoder_ok" / "autoencoder")
  val_err, test_err = reconstruction_error(model, val.images), reconstruction_error(model, test.images)
  ok_val = val_err[val.labels == class_names.index(ok)]
  tmp = run_dir / "predictions.tmp.npz"
  np.savez(
    tmp,
    val_proba=error_to_proba(val_err, ok_val, class_names, ok, ng),
    val_labels=val.labels,
    test_proba=error_to_proba(test_err, ok_val, class_names, ok, ng),
    test_labels=test.labels,
    class_names=np.array(class_names, dtype=object),
    val_error=val_err,
    test_error=test_err,
  )
  os.replace(tmp, run_dir / "predictions.npz")
  info = {
    "method": method,
    "seed": int(seed),
    "train_counts": {ok: len(normal)},
    "best_step": summary.get("final_step"),
    "score": "reconstruction error (MSE, [0, 1] pixels)",
    "wall_s": time.perf_counter() - t0,
  }
  files.atomic_write_json(run_dir / RUN_INFO, info)
  return info
