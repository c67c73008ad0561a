"""Training one defect classifier for an imbalance method, on the saved splits; and the standalone job.

Methods: `none`, `class_weights`, `random_oversampling`, `smote_pixels` (SMOTE on flattened pixels) and
`deepsmote_<penalty>` (the training split plus the synthetic images of a generated dataset).
"""

from __future__ import annotations

import csv
import os
import pathlib
import shutil
import time

import jax
import numpy as np

from deepsmote_jax import evaluation, files, smote
from deepsmote_jax.data.file_images import FileImages
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.export import export_classifier, load_classifier
from deepsmote_jax.jobs import classifier_setup, prepare_data, stage, tiled
from deepsmote_jax.jobs.classifier_setup import RUN_INFO, sampling_strategy
from deepsmote_jax.jobs.generate import read_synthetic, synthetic_files
from deepsmote_jax.jobs.lock import WorkdirLock
from deepsmote_jax.jobs.predict import PREDICTIONS_CSV, save_validation_decision, write_run_predictions
from deepsmote_jax.train.classifier import predict_proba, train_classifier

BASELINES = ("none", "class_weights", "random_oversampling", "smote_pixels")


def append(base: ImageSet, images: np.ndarray | FileImages, labels: np.ndarray) -> ImageSet:
  """`base` plus synthetic images (named `synthetic/<i>`); streamed ones stay streamed."""
  if not len(images):
    return base
  extra = ImageSet(
    images=images,
    labels=np.asarray(labels, np.int32),
    class_names=base.class_names,
    files=[f"synthetic/{i}" for i in range(len(images))],
    skipped=[],
  )
  return base.concat(extra)


def training_set(
  config, work: pathlib.Path, method: str, seed: int, data_dir: pathlib.Path | None = None
) -> tuple[ImageSet, str, str]:
  """(training images, class weighting, oversampling) of a method, from the saved training split (of
  `data_dir`, default `<work>/data`)."""
  train = prepare_data.training_split(config, data_dir or work / "data")
  if method == "none":
    return train, "none", "none"
  if method == "class_weights":
    return train, "balanced", "none"
  if method == "random_oversampling":
    return train, "none", "random"
  if method == "smote_pixels":
    x = np.asarray(train.images).reshape(len(train), -1).astype(np.float32)  # SMOTE on pixels needs them all
    x_res, y_res = smote.fit_resample(  # the originals, then the synthetic rows
      jax.random.key(seed),
      x,
      train.labels,
      k_neighbors=int(config.generate.k_neighbors),
      sampling_strategy=sampling_strategy(config.generate.sampling_strategy),
    )
    new = np.asarray(x_res[len(x) :])
    synth = np.clip(np.rint(new), 0, 255).astype(np.uint8).reshape((-1,) + train.images.shape[1:])
    return append(train, synth, y_res[len(x) :]), "none", "none"
  if method.startswith("deepsmote_"):
    penalty = method.split("_", 1)[1]
    dataset = work / f"generate_{penalty}" / "dataset"
    if train.streamed:  # the synthetic PNGs (the model's size) read like the originals, never all at once
      paths, labels = synthetic_files(dataset, train.class_names)
      return append(train, FileImages(paths, root=None, **train.images.settings()), labels), "none", "none"
    synth, labels = read_synthetic(dataset, train.class_names)
    return append(train, synth, labels), "none", "none"
  raise ValueError(f"unknown method {method!r}")


def train_one(
  config,
  work: pathlib.Path,
  method: str,
  seed: int,
  run_dir: pathlib.Path,
  *,
  extra: ImageSet | None = None,
  progress: bool = True,
  data_dir: pathlib.Path | None = None,
) -> dict:
  """Trains one classifier for `method` (plus optional extra images), exports the best epoch to
  `run_dir/best` and saves validation/test probabilities in `run_dir/predictions.npz`. The splits are those
  of `data_dir` (default `<work>/data`)."""
  evaluation.threshold_settings(config.pipeline)  # a bad threshold/bootstrap setting fails before training
  data_dir = data_dir or work / "data"
  if tiled.is_tiled(config):  # tiles of large images: multiple-instance training, image-level predictions
    return tiled.train_one(config, work, method, int(seed), run_dir, extra=extra, progress=progress, data_dir=data_dir)
  c = config.classifier
  val = prepare_data.load_split(data_dir, "validation")
  test = prepare_data.load_split(data_dir, "test")
  class_names = val.class_names
  pos = config.pipeline.positive_class
  _check_validation(config, val)
  images, weighting, oversampling = training_set(config, work, method, int(seed), data_dir)
  if extra is not None:
    if extra.class_names != class_names:
      raise ValueError(f"extra training images have classes {extra.class_names}, the data has {class_names}")
    images = images.concat(extra)
  tcfg, model = classifier_setup.build(
    config,
    num_classes=len(class_names),
    image_shape=images.image_shape,
    seed=seed,
    class_weighting=weighting,
    oversampling=oversampling,
  )
  in_channels, size = images.images.shape[-1], images.images.shape[1]
  kwargs = dict(c.kwargs)
  stage.log(f"classifier {c.name} / {method} / seed {seed}: training on {images.counts()}")
  t0 = time.perf_counter()
  result = train_classifier(
    model,
    images.images,
    images.labels,
    tcfg,
    num_classes=len(class_names),
    val=(val.images, val.labels),
    positive=class_names.index(pos) if pos else None,
    workdir=str(run_dir),
    progress=progress,
  )
  selected = {"step": result.summary["best_step"], tcfg.select_metric: result.summary["best_score"]}
  export = dict(name=c.name, class_names=class_names, image_size=int(size), in_channels=int(in_channels), kwargs=kwargs)
  export_classifier(result.best_model, run_dir / "best", **export, extra=selected)
  best, _ = load_classifier(run_dir / "best", expect_name=c.name, expect_classes=class_names)
  val_proba, test_proba = _save_predictions(run_dir, best, val, test, in_channels)
  decision = save_validation_decision(run_dir / "best", config.pipeline, val.labels, val_proba, class_names)
  parts = {"validation": (val.files, val.labels, val_proba), "test": (test.files, test.labels, test_proba)}
  write_run_predictions(run_dir / PREDICTIONS_CSV, parts, class_names, decision)
  info = {
    "method": method,
    "seed": int(seed),
    "train_counts": images.counts(),
    "best_step": result.summary.get("best_step"),
    "wall_s": time.perf_counter() - t0,
  }
  files.atomic_write_json(run_dir / "train_summary.json", result.summary)
  files.atomic_write_json(run_dir / RUN_INFO, info)
  return info


def _check_validation(config, val: ImageSet) -> None:
  """Before training: the positive class is in the validation split."""
  pos = config.pipeline.positive_class
  if pos and not np.any(val.labels == (val.class_names.index(pos) if pos in val.class_names else -1)):
    raise ValueError(f"config.pipeline.positive_class={pos!r} has no image in the validation split {val.counts()}")


def _save_predictions(run_dir: pathlib.Path, model, val: ImageSet, test: ImageSet, in_channels: int):
  """Validation and test probabilities of `model` in `run_dir/predictions.npz` (written atomically); returns
  both (validation, test)."""
  tmp = run_dir / "predictions.tmp.npz"
  val_proba = predict_proba(model, val.images, in_channels=in_channels)
  test_proba = predict_proba(model, test.images, in_channels=in_channels)
  np.savez(
    tmp,
    val_proba=val_proba,
    val_labels=val.labels,
    test_proba=test_proba,
    test_labels=test.labels,
    class_names=np.array(val.class_names, dtype=object),
  )
  os.replace(tmp, run_dir / "predictions.npz")
  return val_proba, test_proba


def evaluate_predictions(config, predictions: pathlib.Path, out_dir: pathlib.Path, title: str) -> dict:
  """Test metrics of a run's saved probabilities, with the recall-first threshold chosen on validation by
  config.pipeline.threshold_rule and bootstrap intervals (config.pipeline.bootstrap resamples)."""
  with np.load(predictions, allow_pickle=True) as z:
    return evaluation.evaluate(
      z["test_labels"],
      z["test_proba"],
      list(z["class_names"]),
      positive_class=config.pipeline.positive_class or None,
      val_true=z["val_labels"],
      val_scores=z["val_proba"],
      **evaluation.threshold_settings(config.pipeline),
      out_dir=out_dir,
      title=title,
    )


def train_classifier_job(
  config,
  workdir: str | os.PathLike,
  *,
  method: str = "none",
  seed: int = 0,
  synthetic_dir: str | None = None,
  split_dir: str | os.PathLike | None = None,
  progress: bool = True,
) -> dict:
  """`deepsmote train-classifier`: the data stage's splits (`split_dir`, an earlier run's data folder checked
  against the config, or the stage run into `<workdir>/data`, reused while unchanged), one classifier trained
  on the training split (plus a generated dataset's synthetic images, whose bases and neighbours must all be
  training images of this split), the best epoch exported, evaluated on the test split."""
  if method not in BASELINES:
    raise ValueError(f"method={method!r}: choose one of {BASELINES}")
  classifier_setup.check_weights(config)
  work = pathlib.Path(workdir)
  work.mkdir(parents=True, exist_ok=True)
  with WorkdirLock(work):
    return _train_classifier_job(config, work, method, seed, synthetic_dir, split_dir, progress)


def check_synthetic(dataset_dir: pathlib.Path, split: dict) -> None:
  """Every base and neighbour file of a generated dataset's synthetic images is a training file of `split`
  (`prepare_data.split_record`): none is a validation or test image. Rows without provenance (a manifest
  written by hand, without base_file / neighbor_file) are not checked."""
  with open(dataset_dir / "manifest.csv", newline="", encoding="utf-8") as f:
    rows = [r for r in csv.DictReader(f) if str(r.get("synthetic")) in ("1", "True", "true")]
  held_out = {f: name for name in ("validation", "test") for f in split["splits"].get(name, [])}
  train = set(split["splits"].get("train", []))
  for r in rows:
    for key in ("base_file", "neighbor_file"):
      if not r.get(key):
        continue
      if r[key] in held_out:
        raise ValueError(
          f"--synthetic {str(dataset_dir)!r}: synthetic image {r['file']!r} was made from {r[key]!r}, a "
          f"{held_out[r[key]]} image of the split in {split['dir']!r}; generate it with --split {split['dir']!r}"
        )
      if r[key] not in train:
        raise ValueError(
          f"--synthetic {str(dataset_dir)!r}: synthetic image {r['file']!r} was made from {r[key]!r}, not a "
          f"training image of the split in {split['dir']!r}; generate it with --split {split['dir']!r}"
        )


def _train_classifier_job(
  config, work: pathlib.Path, method: str, seed: int, synthetic_dir: str | None, split_dir, progress: bool
) -> dict:
  data_dir = prepare_data.ensure(config, work, split_dir)
  extra = None
  if synthetic_dir:
    train = prepare_data.load_split(data_dir, "train")
    check_synthetic(pathlib.Path(synthetic_dir), prepare_data.split_record(data_dir))
    synth, labels = read_synthetic(pathlib.Path(synthetic_dir), train.class_names)
    if len(synth) and synth.shape[1:] != train.images.shape[1:]:
      raise ValueError(
        f"synthetic images in {synthetic_dir} are {synth.shape[1:]}, the data is {train.images.shape[1:]}"
      )
    extra = ImageSet(
      images=synth,
      labels=labels,
      class_names=train.class_names,
      files=[f"synthetic/{i}" for i in range(len(synth))],
      skipped=[],
    )
  run_dir = work / "classifier"
  if run_dir.exists():
    shutil.rmtree(run_dir)
  info = train_one(config, work, method, seed, run_dir, extra=extra, progress=progress, data_dir=data_dir)
  result = evaluate_predictions(
    config, run_dir / "predictions.npz", work / "evaluation", f"{config.classifier.name} ({method})"
  )
  return {
    **info,
    "model": str(run_dir / "best"),
    "evaluation": str(work / "evaluation"),
    "split": str(data_dir),
    "test": {k: result.get(k) for k in ("accuracy", "acsa", "g_mean", "macro_f1")},
  }
