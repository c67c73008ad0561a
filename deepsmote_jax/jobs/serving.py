"""Deployable forms of an exported classifier, each checked against the JAX model when written.

`export_serving(model_dir, out)` writes into `out/` (complete or absent: built beside it, then renamed):
  model.stablehlo   the eval-mode forward pass uint8 (batch, H, W, C) -> class probabilities (batch, C),
                    serialized with `jax.export` (weights inside, batch size symbolic, CPU and CUDA);
  saved_model/      the same function as a TensorFlow SavedModel through `jax2tf` (when TensorFlow is
                    installed; `savedmodel=False` skips it), signature `serving_default(images)`;
  serving.json      classes, input size and channels, positive class, the saved threshold, tiling;
  MODEL_CARD.md     what the model is, what it was trained and chosen on, how to call it, its limits.
`load_serving(out)` gives back a NumPy callable and the serving.json record.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from deepsmote_jax.export import load_classifier
from deepsmote_jax.files import atomic_write_json, atomic_write_text, json_safe, temp_dir_beside
from deepsmote_jax.jobs.predict import load_decision
from deepsmote_jax.train.classifier import predict_proba, probability_fn

SERVING_FORMAT = "deepsmote_jax.serving/1"
PLATFORMS = ("cpu", "cuda")
CHECK_ATOL = 1e-5  # largest |probability difference| accepted between a serialized form and the JAX model


def _exported(model, meta: dict, platforms) -> jax_export.Exported:
  shape = jax_export.symbolic_shape(f"b, {meta['image_size']}, {meta['image_size']}, {meta['in_channels']}")
  fn = probability_fn(model, meta["in_channels"])
  return jax_export.export(jax.jit(fn), platforms=tuple(platforms))(jax.ShapeDtypeStruct(shape, jnp.uint8))


def _check(name: str, got: np.ndarray, want: np.ndarray) -> float:
  diff = float(np.max(np.abs(np.asarray(got, np.float64) - want)))
  if not diff <= CHECK_ATOL:
    raise RuntimeError(f"{name} differs from the JAX model by {diff:.3g} (> {CHECK_ATOL}); not written")
  return diff


def _savedmodel(exp: jax_export.Exported, meta: dict, path: pathlib.Path, probe: np.ndarray, want) -> float:
  """Writes the SavedModel through jax2tf (native serialization of the same StableHLO) and checks it."""
  import tensorflow as tf
  from jax.experimental import jax2tf

  size, c = meta["image_size"], meta["in_channels"]
  module = tf.Module()
  module.f = tf.function(
    jax2tf.convert(exp.call, polymorphic_shapes=[f"(b, {size}, {size}, {c})"], with_gradient=False),
    autograph=False,
    input_signature=[tf.TensorSpec([None, size, size, c], tf.uint8, name="images")],
  )
  tf.saved_model.save(module, str(path), signatures={"serving_default": module.f})
  loaded = tf.saved_model.load(str(path))
  got = loaded.signatures["serving_default"](images=tf.constant(probe))
  return _check("the SavedModel", next(iter(got.values())).numpy(), want)


def model_card(meta: dict, serving: dict) -> str:
  """A short Markdown card: the model, its inputs and outputs, how it was chosen, how to call it, its limits."""
  thr = serving.get("threshold")
  lines = [
    f"# Model card: {meta['name']} defect classifier",
    "",
    f"- Classes: {', '.join(meta['class_names'])}; positive (NG) class: {serving.get('positive_class') or 'not set'}.",
    f"- Input: uint8 images (batch, {meta['image_size']}, {meta['image_size']}, {meta['in_channels']}), "
    "pixel values as decoded (0-255); the model scales them itself.",
    "- Output: class probabilities (batch, classes), eval mode (BatchNorm running statistics, no dropout).",
  ]
  if meta.get("tiles"):
    t = meta["tiles"]
    lines.append(
      f"- Tiled model: it scores {t['size']} px tiles (stride {t['stride']}) cut at native resolution and "
      f"resized to {meta['image_size']} px; an image's P(NG) is the mean of its top {t['top_k']} tile scores. "
      "The serialized function scores tiles; `deepsmote predict` does the cutting and pooling."
    )
  chosen = {k: v for k, v in meta.items() if k in ("step", "average_precision", "roc_auc", "neg_loss", "acsa")}
  if chosen:
    lines.append(f"- Chosen on validation images: {json.dumps(json_safe(chosen))}.")
  if thr:
    lines.append(
      f"- Recall-first threshold: flag NG when P(NG) >= {thr['value']:.6g} (rule {thr['rule']!r}, target NG recall "
      f"{thr.get('target_recall')}, from {thr.get('val_n_positive')} validation NG images)."
    )
  else:
    lines.append("- No recall-first threshold saved: decisions are the argmax unless one is given.")
  lines += [
    "",
    "## Use",
    "```python",
    "from deepsmote_jax.jobs.serving import load_serving",
    "predict, info = load_serving('<this folder>')",
    "proba = predict(images_uint8)  # (batch, classes)",
    "```",
    "or `deepsmote predict --model <classifier> --images <folder> --workdir <out>` (writes predictions.csv).",
    "",
    "## Limits",
    "- Trained on the images of one line and camera; check NG recall and overkill on images of any other "
    "before relying on it (`config.data.test_root`).",
    "- The threshold's recall guarantee holds only as far as the validation NG images represent future defects.",
  ]
  return "\n".join(lines) + "\n"


def export_serving(
  model_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  platforms=PLATFORMS,
  savedmodel: bool | str = "auto",
  overwrite: bool = False,
) -> dict:
  """Writes the serialized forms of the classifier at `model_dir` into `out_dir` (see the module docstring);
  returns serving.json's record. savedmodel: True (TensorFlow required), False, or 'auto' (when importable)."""
  out = pathlib.Path(out_dir)
  if out.exists() and not overwrite:
    raise ValueError(f"{out} exists; choose another folder or pass --overwrite")
  if savedmodel == "auto":
    try:
      import tensorflow  # noqa: F401
    except ImportError:
      savedmodel = False
  model, meta = load_classifier(model_dir)
  decision = load_decision(model_dir) or {}
  exp = _exported(model, meta, platforms)
  size, c = meta["image_size"], meta["in_channels"]
  probe = np.random.default_rng(0).integers(0, 256, (3, size, size, c), dtype=np.uint8)
  want = np.asarray(predict_proba(model, probe, in_channels=c), np.float64)
  record: dict[str, Any] = {
    "format": SERVING_FORMAT,
    "classifier": meta["name"],
    "class_names": meta["class_names"],
    "image_size": size,
    "in_channels": c,
    "input": "uint8 (batch, H, W, C)",
    "output": "float32 class probabilities (batch, classes)",
    "platforms": list(platforms),
    "positive_class": decision.get("positive_class"),
    "threshold": decision.get("threshold"),
    "tiles": meta.get("tiles"),
    "checked_max_abs_diff": {},
  }
  tmp = temp_dir_beside(out)
  try:
    blob = exp.serialize()
    (tmp / "model.stablehlo").write_bytes(blob)
    reloaded = jax_export.deserialize(bytearray(blob))
    record["checked_max_abs_diff"]["stablehlo"] = _check("the StableHLO export", reloaded.call(probe), want)
    if savedmodel:
      record["checked_max_abs_diff"]["saved_model"] = _savedmodel(exp, meta, tmp / "saved_model", probe, want)
    atomic_write_json(tmp / "serving.json", record)
    atomic_write_text(tmp / "MODEL_CARD.md", model_card(meta, record))
    if out.exists():
      shutil.rmtree(out)
    os.replace(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return record


def load_serving(out_dir: str | os.PathLike):
  """(predict, record): `predict(uint8 images) -> probabilities` from model.stablehlo, and serving.json."""
  out = pathlib.Path(out_dir)
  record = json.loads((out / "serving.json").read_text())
  if record.get("format") != SERVING_FORMAT:
    raise ValueError(f"{out} is not a serving export (format {record.get('format')!r})")
  exp = jax_export.deserialize(bytearray((out / "model.stablehlo").read_bytes()))
  return (lambda images: np.asarray(exp.call(np.asarray(images, np.uint8)))), record
