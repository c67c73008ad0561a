"""Evaluate an exported classifier on image folders (the library side of scripts/evaluate.py)."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from deepsmote_jax import evaluation
from deepsmote_jax.data.folder import load_image_folder
from deepsmote_jax.export import load_classifier
from deepsmote_jax.train.classifier import predict_proba


def _load(folder, meta, resize, on_error):
  root = pathlib.Path(folder)
  if not root.is_dir():
    raise FileNotFoundError(f"image folder not found: {root}")
  found = sorted(p.name for p in root.iterdir() if p.is_dir())
  unknown = sorted(set(found) - set(meta["class_names"]))
  if unknown:
    raise ValueError(
      f"{root} has class folder(s) {unknown} that the classifier was not trained on "
      f"(its classes: {meta['class_names']})"
    )
  classes = [c for c in meta["class_names"] if c in found]
  if not classes:
    raise ValueError(f"{root} has none of the classifier's classes {meta['class_names']}")
  ds = load_image_folder(
    root, image_size=meta["image_size"], channels=meta["in_channels"], resize=resize, on_error=on_error, classes=classes
  )
  # Labels must index the classifier's classes even when a class folder is absent from this set.
  remap = np.array([meta["class_names"].index(c) for c in ds.class_names])
  return ds.images, remap[ds.labels]


def evaluate_folder(
  model_dir: str | os.PathLike,
  folder: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  val_folder: str | os.PathLike | None = None,
  positive_class: str | None = "NG",
  target_recall: float = 0.98,
  resize: str = "resize",
  on_error: str = "raise",
) -> dict:
  """Loads the classifier, predicts the folder (and the validation folder), writes the evaluation report."""
  model, meta = load_classifier(model_dir)
  if positive_class is not None and positive_class not in meta["class_names"]:
    raise ValueError(f"positive class {positive_class!r} is not one of the classifier's classes {meta['class_names']}")
  images, labels = _load(folder, meta, resize, on_error)
  proba = predict_proba(model, images, in_channels=meta["in_channels"])
  val_true = val_scores = None
  if val_folder is not None:
    v_images, val_true = _load(val_folder, meta, resize, on_error)
    val_scores = predict_proba(model, v_images, in_channels=meta["in_channels"])
  return evaluation.evaluate(
    labels,
    proba,
    meta["class_names"],
    positive_class=positive_class,
    val_true=val_true,
    val_scores=val_scores,
    target_recall=target_recall,
    out_dir=out_dir,
    title=f"{meta['name']} on {folder}",
  )
