"""Score a folder of unlabelled images with an exported classifier: one CSV row per file.

The line's use of a trained model: images arrive without labels, each gets P(NG) and two decisions, the
argmax and the recall-first threshold saved with the model (`decision.json`, written when the classifier run
chose it on validation images). Preprocessing is the model's own (its image size and channels; for a tiled
model, its tile size, stride and top-k pooling at native resolution). A file that cannot be decoded is a
counted skip: its row says why, and the summary counts it; nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
from typing import Any

import numpy as np

from deepsmote_jax import evaluation
from deepsmote_jax import metrics as M
from deepsmote_jax.data import image_io
from deepsmote_jax.data import tiles as tiles_lib
from deepsmote_jax.data.folder import DEFAULT_EXTENSIONS, parallel_map
from deepsmote_jax.data.image_io import BadImageError
from deepsmote_jax.export import load_classifier
from deepsmote_jax.files import atomic_write_json, atomic_write_text
from deepsmote_jax.train.classifier import predict_proba

DECISION_FILE = "decision.json"
PREDICTIONS_CSV = "predictions.csv"  # a classifier run's per-image predictions (file, split, actual, ...)
DECISION_FORMAT = "deepsmote_jax.decision/1"


def save_decision(model_dir: str | os.PathLike, positive_class: str, threshold: dict | None) -> dict:
  """Writes `<model_dir>/decision.json`: the positive class and the recall-first threshold (an
  `evaluation.evaluate` result's `threshold` entry; None or a NaN value: argmax only); returns the record."""
  record: dict[str, Any] = {"format": DECISION_FORMAT, "positive_class": positive_class, "threshold": None}
  if threshold and threshold.get("value_score") is not None and not math.isnan(threshold["value_score"]):
    record["threshold"] = {
      key: threshold.get(key)
      for key in ("rule", "value_score", "value", "scale", "target_recall", "confidence", "val_n_positive")
    }
  atomic_write_json(pathlib.Path(model_dir) / DECISION_FILE, record)
  return record


def save_validation_decision(model_dir, pipeline, val_labels, val_proba, class_names) -> dict | None:
  """decision.json for an exported model from its validation predictions, chosen as the report chooses it
  (`config.pipeline`: positive_class, target_recall, threshold_rule/confidence/margin); None without a
  positive class."""
  positive_class = pipeline.positive_class or None
  if positive_class is None:
    return None
  kw = evaluation.threshold_settings(pipeline)
  settings = {
    "rule": kw["threshold_rule"],
    "target_recall": kw["target_recall"],
    "confidence": kw["threshold_confidence"],
    "margin": kw["threshold_margin"],
  }
  p = list(class_names).index(positive_class)
  threshold, _ = evaluation.validation_threshold(val_labels, val_proba, p, positive_class, settings)
  return save_decision(model_dir, positive_class, threshold)


def load_decision(model_dir: str | os.PathLike) -> dict | None:
  """The saved decision record, None when the model has none."""
  path = pathlib.Path(model_dir) / DECISION_FILE
  if not path.exists():
    return None
  record = json.loads(path.read_text())
  if record.get("format") != DECISION_FORMAT:
    raise ValueError(f"{path} is not a decision record (format {record.get('format')!r})")
  return record


def list_images(root: str | os.PathLike, extensions=DEFAULT_EXTENSIONS) -> list[str]:
  """Image files below `root` (any depth, hidden entries ignored, links not followed), relative and sorted."""
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise ValueError(f"image folder {root!r} does not exist or is not a folder")
  exts = tuple(e.lower() for e in extensions)
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    out += [
      os.path.relpath(os.path.join(dirpath, f), root)
      for f in filenames
      if not f.startswith(".") and f.lower().endswith(exts)
    ]
  if not out:
    raise ValueError(f"image folder {root!r} holds no image files ({', '.join(exts)})")
  return sorted(out)


def decision_columns(proba: np.ndarray, class_names: list[str], pos: int, cut: float | None) -> list:
  """One image's CSV cells: P(class) per class, the argmax class, and whether the threshold flags it
  ('' without a threshold); the threshold is on the logit-P(positive) scale, as `evaluation` applies it."""
  flagged = "" if cut is None else bool(M.positive_logit(np.asarray(proba, np.float64)[None], pos)[0] >= cut)
  return [*(f"{float(p):.6g}" for p in proba), class_names[int(np.argmax(proba))], flagged]


def write_run_predictions(path, parts: dict, class_names: list[str], decision: dict | None) -> pathlib.Path:
  """A classifier run's predictions.csv: file, split, actual class, P(class) per class, the argmax decision and
  the decision at the run's saved threshold. parts: {split: (files, labels, proba)}."""
  positive_class = (decision or {}).get("positive_class")
  pos = class_names.index(positive_class) if positive_class else None
  saved = (decision or {}).get("threshold")
  cut = float(saved["value_score"]) if saved and pos is not None else None
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow(["file", "split", "actual", *_decision_header(class_names, positive_class)])
  for split, (files, labels, proba) in parts.items():
    for f, y, row in zip(files, labels, proba):
      writer.writerow([f, split, class_names[int(y)], *decision_columns(row, class_names, pos or 0, cut)])
  return atomic_write_text(path, buf.getvalue())


def _decision_header(class_names: list[str], positive_class: str | None) -> list[str]:
  return [*(f"p_{c}" for c in class_names), "argmax", f"{positive_class or 'positive'}_at_threshold"]


def _threshold_score(decision: dict | None, threshold: float | None) -> tuple[float | None, str]:
  """(threshold on the logit-P(positive) scale or None, where it came from)."""
  if threshold is not None:
    if not 0.0 < threshold < 1.0:
      raise ValueError(f"--threshold={threshold}: a probability strictly between 0 and 1")
    return math.log(threshold) - math.log1p(-threshold), "given"
  saved = (decision or {}).get("threshold")
  if not saved:
    return None, "none saved with the model"
  if saved.get("scale") != "logit":
    raise ValueError(f"decision.json threshold is on the {saved.get('scale')!r} scale; only 'logit' is supported")
  return float(saved["value_score"]), f"saved ({saved.get('rule')} rule)"


def _score_images(model, meta: dict, root: str, files: list[str], resize: str) -> list[tuple[Any, Exception | None]]:
  """[(class probabilities (C,), None) or (None, error)] per file, in order."""
  size, channels, tiling = meta["image_size"], meta["in_channels"], meta.get("tiles")

  def decode(rel):
    path = os.path.join(root, rel)
    if not tiling:
      return image_io.decode_image(path, size, channels, resize)
    im = image_io.open_image(path, channels=channels)
    image = np.asarray(im, np.uint8).reshape(im.size[1], im.size[0], channels)
    settings = tiles_lib.TileSettings(
      mode="tiles", size=tiling["size"], stride=tiling["stride"], min_std=tiling.get("min_std", 0.0)
    )
    return tiles_lib.cut_image(image, settings, image_size=size)[0]

  decoded = parallel_map(decode, files)
  ok = [i for i, (_, err) in enumerate(decoded) if err is None]
  if not ok:
    return decoded
  if not tiling:
    proba = predict_proba(model, np.stack([decoded[i][0] for i in ok]), in_channels=channels)
  else:
    pos = meta["class_names"].index(meta["positive_class"]) if meta.get("positive_class") else 1
    tiles = [decoded[i][0] for i in ok]
    bag = np.concatenate([np.full(len(t), j) for j, t in enumerate(tiles)])
    tile_proba = predict_proba(model, np.concatenate(tiles), in_channels=channels)
    ng = tiles_lib.aggregate(tile_proba[:, pos], bag, len(tiles), int(tiling["top_k"]))
    proba = np.empty((len(ok), 2), np.float64)
    proba[:, pos], proba[:, 1 - pos] = ng, 1.0 - ng
  out: list[tuple[Any, Exception | None]] = list(decoded)
  for j, i in enumerate(ok):
    out[i] = (proba[j], None)
  return out


def predict_folder(
  model_dir: str | os.PathLike,
  images: str | os.PathLike,
  out_csv: str | os.PathLike,
  *,
  positive_class: str | None = None,
  threshold: float | None = None,
  resize: str = "resize",
  on_error: str = "skip",
) -> dict:
  """Writes `out_csv` (file, status, P(class) per class, argmax decision, threshold decision) atomically and
  returns a summary (counts scored / skipped / flagged, the threshold used and where it came from).

  positive_class: the NG class (default: the one saved with the model, else 'NG' when the model has it).
  threshold: P(positive) at or above which an image is flagged, instead of the saved one.
  on_error: 'skip' (a bad file gets a row with its reason and is counted) or 'raise'.
  """
  if on_error not in image_io.ON_ERROR:
    raise ValueError(f"on_error must be one of {image_io.ON_ERROR}, got {on_error!r}")
  model, meta = load_classifier(model_dir)
  class_names = list(meta["class_names"])
  decision = load_decision(model_dir)
  positive_class = positive_class or (decision or {}).get("positive_class") or ("NG" if "NG" in class_names else None)
  if positive_class not in class_names:
    raise ValueError(f"positive class {positive_class!r} is not one of the classifier's classes {class_names}")
  pos = class_names.index(positive_class)
  cut, source = _threshold_score(decision, threshold)
  root = os.fspath(images)
  files = list_images(root)
  scored = _score_images(model, {**meta, "positive_class": positive_class}, root, files, resize)
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow(["file", "status", *_decision_header(class_names, positive_class)])
  n_skipped = n_flagged = 0
  for rel, (proba, err) in zip(files, scored):
    if err is not None:
      if on_error == "raise" or not isinstance(err, (BadImageError, OSError)):
        raise ValueError(f"{os.path.join(root, rel)}: {err}") from err
      n_skipped += 1
      writer.writerow([rel, f"skipped: {err}", *([""] * len(class_names)), "", ""])
      continue
    cells = decision_columns(proba, class_names, pos, cut)
    n_flagged += cells[-1] is True
    writer.writerow([rel, "ok", *cells])
  atomic_write_text(out_csv, buf.getvalue())
  return {
    "csv": os.fspath(out_csv),
    "images": len(files),
    "scored": len(files) - n_skipped,
    "skipped": n_skipped,
    "positive_class": positive_class,
    "threshold_p": None if cut is None else 1.0 / (1.0 + math.exp(-cut)),
    "threshold_source": source,
    "flagged_at_threshold": None if cut is None else n_flagged,
  }
