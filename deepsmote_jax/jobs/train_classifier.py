"""The classifier training job: one classifier on a split of the data (optionally with synthetic images)."""
from __future__ import annotations

import os
import pathlib
import shutil

from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.jobs.pipeline import _Context, _done, _evaluate_predictions, _run_stage, read_synthetic


def train_classifier_job(config, workdir: str | os.PathLike, *, method: str = "none", seed: int = 0,
                         synthetic_dir: str | None = None, progress: bool = True) -> dict:
  """`scripts/train_classifier.py`: split the data (reusing `<workdir>/data` if complete), train one classifier
  (optionally adding a generated dataset's synthetic images), export the best epoch, evaluate on the test split."""
  work = pathlib.Path(workdir)
  work.mkdir(parents=True, exist_ok=True)
  ctx = _Context(config, work, progress, None)
  if not _done(work, "data"):
    _run_stage(work, "data", ctx.stage_data)
  extra = None
  train = ctx.split("train")
  if synthetic_dir:
    synth, labels = read_synthetic(pathlib.Path(synthetic_dir), train.class_names)
    extra = ImageSet(images=synth, labels=labels, class_names=train.class_names,
                     files=[f"synthetic/{i}" for i in range(len(synth))], skipped=[])
    if synth.shape[1:] != train.images.shape[1:]:
      raise ValueError(f"synthetic images in {synthetic_dir} are {synth.shape[1:]}, the data is {train.images.shape[1:]}")
  run_dir = work / "classifier"
  if run_dir.exists():
    shutil.rmtree(run_dir)
  info = ctx.train_one(method, seed, run_dir, extra=extra)
  result = _evaluate_predictions(config, run_dir / "predictions.npz", work / "evaluation",
                                 f"{config.classifier.name} ({method})")
  return {**info, "model": str(run_dir / "best"), "evaluation": str(work / "evaluation"),
          "test": {k: result.get(k) for k in ("accuracy", "acsa", "g_mean", "macro_f1")}}
