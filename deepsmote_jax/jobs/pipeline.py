"""The main job: imbalanced images -> DeepSMOTE -> balanced set -> classifiers -> the with/without comparison.

Stages (each in its own folder under the workdir, each finished by an atomic `DONE.json` marker holding its
wall time): `data` (load, split train/validation/test, make the training split scarce in NG),
`autoencoder_<penalty>` (train + export), `generate_<penalty>` (latent SMOTE -> balanced dataset folder),
`classifiers` (every method x seed: train, pick the best epoch on validation, predict validation and test),
`report` (metrics, recall-first thresholds, tables, figures). A rerun skips finished stages; the first
unfinished stage (a missing or half-written folder) and every stage after it are redone from scratch.

Methods compared: `none`, `class_weights`, `random_oversampling`, `smote_pixels` (SMOTE on flattened pixels),
`deepsmote` (one entry per penalty in `pipeline.penalties`).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import time
from typing import Any, Callable

import numpy as np

from deepsmote_jax.data.folder import ImageSet

METHODS = ("none", "class_weights", "random_oversampling", "smote_pixels", "deepsmote")


def _log(msg: str) -> None:
  print(f"[pipeline] {msg}", flush=True)


def _write_json_atomic(path: pathlib.Path, payload: dict) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(payload, indent=2, default=str))
  os.replace(tmp, path)


def stage_names(config) -> list[str]:
  names = ["data"]
  if "deepsmote" in config.pipeline.methods:
    for p in config.pipeline.penalties:
      names += [f"autoencoder_{p}", f"generate_{p}"]
  return names + ["classifiers", "report"]


def _done(work: pathlib.Path, name: str) -> bool:
  return (work / name / "DONE.json").is_file()


def run_pipeline(config, workdir: str | os.PathLike, *, progress: bool = True, only: str | None = None,
                 image_set: ImageSet | None = None) -> dict:
  """Runs (or resumes) every stage; returns the report's summary. `only` runs one stage (its inputs must exist)."""
  validate_config(config)
  work = pathlib.Path(workdir)
  work.mkdir(parents=True, exist_ok=True)
  ctx = _Context(config, work, progress, image_set)
  # 'autoencoder_<penalty>' -> ctx.stage_autoencoder, etc.; each takes its output folder.
  stages = {n: getattr(ctx, "stage_" + n.split("_")[0]) for n in stage_names(config)}
  order = list(stages)
  if only is not None:
    if only not in stages:
      raise ValueError(f"unknown stage {only!r}; stages of this config: {order}")
    names = [only]
  else:
    redo_from = next((i for i, n in enumerate(order) if not _done(work, n)), len(order))
    names = order[redo_from:]
    for n in order[:redo_from]:
      _log(f"stage {n}: done earlier, reused ({work / n})")
    for n in names:   # never build on a half-written or stale stage
      if (work / n).exists():
        shutil.rmtree(work / n)
  for n in names:
    _run_stage(work, n, stages[n])
  return json.loads((work / "report" / "summary.json").read_text()) if _done(work, "report") else {}


def _run_stage(work: pathlib.Path, name: str, run: Callable[[pathlib.Path], dict]) -> None:
  """Runs one stage in a fresh `<work>/<name>` and marks it finished with DONE.json (wall time + info)."""
  out = work / name
  if out.exists():
    shutil.rmtree(out)
  out.mkdir(parents=True)
  t0 = time.perf_counter()
  _log(f"stage {name}: running")
  info = run(out)
  wall = time.perf_counter() - t0
  _write_json_atomic(out / "DONE.json", {"stage": name, "wall_s": wall, **(info or {})})
  _log(f"stage {name}: done in {wall:.1f} s")


def _evaluate_predictions(config, predictions: pathlib.Path, out_dir: pathlib.Path, title: str) -> dict:
  """Test metrics of a run's saved probabilities, with the recall-first threshold chosen on validation."""
  from deepsmote_jax import evaluation
  with np.load(predictions, allow_pickle=True) as z:
    return evaluation.evaluate(z["test_labels"], z["test_proba"], list(z["class_names"]),
                               positive_class=config.pipeline.positive_class or None, val_true=z["val_labels"],
                               val_scores=z["val_proba"], target_recall=float(config.pipeline.target_recall),
                               out_dir=out_dir, title=title)


def validate_config(config) -> None:
  unknown = [m for m in config.pipeline.methods if m not in METHODS]
  if unknown:
    raise ValueError(f"config.pipeline.methods has unknown method(s) {unknown}; known: {list(METHODS)}")
  if not config.pipeline.seeds:
    raise ValueError("config.pipeline.seeds is empty")
  from deepsmote_jax.train.autoencoder import PENALTIES
  bad = [p for p in config.pipeline.penalties if p not in PENALTIES]
  if bad:
    raise ValueError(f"config.pipeline.penalties has unknown penalty {bad}; known: {list(PENALTIES)}")


def _save_split(path: pathlib.Path, s: ImageSet) -> None:
  np.savez(path, images=s.images, labels=s.labels, files=np.array(s.files, dtype=object),
           class_names=np.array(s.class_names, dtype=object))


def _load_split(path: pathlib.Path) -> ImageSet:
  with np.load(path, allow_pickle=True) as z:
    return ImageSet(images=z["images"], labels=z["labels"], class_names=list(z["class_names"]),
                    files=list(z["files"]), skipped=[])


class _Context:
  """Holds the config and implements each stage."""

  def __init__(self, config, work: pathlib.Path, progress: bool, image_set: ImageSet | None):
    self.config, self.work, self.progress, self.image_set = config, work, progress, image_set

  # -- data -------------------------------------------------------------------------------------------
  def stage_data(self, out: pathlib.Path) -> dict:
    from deepsmote_jax.data import protocols, splits
    from deepsmote_jax.models import presets
    cfg = self.config
    spec = presets.get_preset(cfg.model.preset, channels=int(cfg.model.channels))
    if self.image_set is not None:
      ds = self.image_set
    else:
      from deepsmote_jax.data.sources import load_source
      ds = load_source(cfg.data, image_size=spec.image_size, channels=spec.channels)
    if ds.images.shape[1:] != (spec.image_size, spec.image_size, spec.channels):
      raise ValueError(f"images are {ds.images.shape[1:]}, the model expects "
                       f"{(spec.image_size, spec.image_size, spec.channels)}")
    if len(ds.class_names) < 2:
      raise ValueError(f"only one class ({ds.class_names}) in the data: need OK and at least one defect class")
    pos = cfg.pipeline.positive_class
    if pos and pos not in ds.class_names:
      raise ValueError(f"config.pipeline.positive_class={pos!r} is not a class of the data {ds.class_names}")
    ratios = tuple(cfg.split.ratios)
    if len(ratios) != 3:
      raise ValueError(f"config.split.ratios must be (train, validation, test), got {ratios}")
    parts = splits.split_image_set(ds, ratios, seed=int(cfg.split.seed), group_pattern=cfg.split.group_pattern or None,
                                   names=("train", "validation", "test"))
    train = parts["train"]
    imb = cfg.imbalance
    counts = train.counts()
    if imb.ok_count or imb.minority_ratio:
      if imb.ok_class not in train.class_names:
        raise ValueError(f"config.imbalance.ok_class={imb.ok_class!r} is not a class of the data {train.class_names}")
      ok = min(int(imb.ok_count) or counts[imb.ok_class], counts[imb.ok_class])
      target = {c: (ok if c == imb.ok_class else
                    (min(n, max(2, int(round(imb.minority_ratio * ok)))) if imb.minority_ratio else n))
                for c, n in counts.items()}
      train = protocols.subsample_per_class(train, target, seed=int(imb.seed))
    for name, part in (("train", train), ("validation", parts["validation"]), ("test", parts["test"])):
      _save_split(out / f"{name}.npz", part)
    splits.save_manifest({"train": train, "validation": parts["validation"], "test": parts["test"]},
                         out / "split_manifest.json")
    info = {"class_names": train.class_names, "counts": {n: p.counts() for n, p in
                                                         (("train", train), ("validation", parts["validation"]),
                                                          ("test", parts["test"]))}}
    _log(f"data: {info['counts']}")
    return info

  def split(self, name: str) -> ImageSet:
    return _load_split(self.work / "data" / f"{name}.npz")

  # -- autoencoder ----------------------------------------------------------------------------------------
  def stage_autoencoder(self, out: pathlib.Path) -> dict:
    from deepsmote_jax.jobs.train_autoencoder import train_and_export
    penalty = out.name.split("_", 1)[1]
    cfg = self.config.copy_and_resolve_references()
    cfg.train.penalty = penalty
    summary = train_and_export(cfg, str(out), progress=self.progress, image_set=self.split("train"))
    return {"final_loss": summary.get("loss"), "steps": summary.get("final_step")}

  # -- generate ---------------------------------------------------------------------------------------
  def stage_generate(self, out: pathlib.Path) -> dict:
    from deepsmote_jax.export import load_autoencoder
    from deepsmote_jax.jobs.generate import generate_dataset
    penalty = out.name.split("_", 1)[1]
    model, _ = load_autoencoder(self.work / f"autoencoder_{penalty}" / "autoencoder")
    g = self.config.generate
    strategy = g.sampling_strategy
    summary = generate_dataset(model, self.split("train"), out / "dataset", sampling_strategy=_parse_strategy(strategy),
                               k_neighbors=int(g.k_neighbors), kind=g.kind, seed=int(g.seed), copy_originals="png")
    return {"counts": summary.get("after") or summary.get("counts_after")}

  # -- classifiers --------------------------------------------------------------------------------------
  def training_set(self, method: str, seed: int) -> tuple[ImageSet, str, str]:
    """(training images, class weighting, oversampling) of a method."""
    train = self.split("train")
    if method == "none":
      return train, "none", "none"
    if method == "class_weights":
      return train, "balanced", "none"
    if method == "random_oversampling":
      return train, "none", "random"
    if method == "smote_pixels":
      import jax
      from deepsmote_jax import smote
      x = train.images.reshape(len(train.images), -1).astype(np.float32)
      r = smote.fit_resample(jax.random.key(seed), x, train.labels, sampling_strategy=_parse_strategy(
          self.config.generate.sampling_strategy), k_neighbors=int(self.config.generate.k_neighbors))
      synth = np.clip(np.rint(np.asarray(r.samples)), 0, 255).astype(np.uint8).reshape((-1,) + train.images.shape[1:])
      return _append(train, synth, np.asarray(r.labels)), "none", "none"
    if method.startswith("deepsmote_"):
      penalty = method.split("_", 1)[1]
      synth, labels = read_synthetic(self.work / f"generate_{penalty}" / "dataset", train.class_names)
      return _append(train, synth, labels), "none", "none"
    raise ValueError(method)

  def method_names(self) -> list[str]:
    names = []
    for m in self.config.pipeline.methods:
      names += [f"deepsmote_{p}" for p in self.config.pipeline.penalties] if m == "deepsmote" else [m]
    return names

  def train_one(self, method: str, seed: int, run_dir: pathlib.Path, *, extra: ImageSet | None = None) -> dict:
    """Trains one classifier for `method` (plus optional extra images), exports the best epoch and saves
    validation/test probabilities in `run_dir/predictions.npz`."""
    from deepsmote_jax.export import load_classifier
    from deepsmote_jax.models.classifiers import build_classifier
    from deepsmote_jax.train.classifier import ClassifierTrainConfig, predict_proba, train_classifier
    from deepsmote_jax.train.precision import compute_dtype
    c = self.config.classifier
    val, test = self.split("validation"), self.split("test")
    class_names = val.class_names
    pos = self.config.pipeline.positive_class
    positive = class_names.index(pos) if pos else None
    images, weighting, oversampling = self.training_set(method, int(seed))
    if extra is not None:
      if extra.class_names != class_names:
        raise ValueError(f"extra training images have classes {extra.class_names}, the data has {class_names}")
      images = images.concat(extra)
    tcfg = ClassifierTrainConfig(
        epochs=int(c.epochs), batch_size=int(c.batch_size), learning_rate=float(c.learning_rate),
        optimizer=c.optimizer, weight_decay=float(c.weight_decay), class_weighting=weighting,
        oversampling=oversampling, flip_lr=bool(c.flip_lr), flip_ud=bool(c.flip_ud), max_shift=int(c.max_shift),
        steps_per_call=int(c.steps_per_call), compute_dtype=c.compute_dtype, select_metric=c.select_metric,
        seed=int(seed))
    in_channels = images.images.shape[-1]
    kwargs = dict(c.kwargs)
    model = build_classifier(c.name, len(class_names), in_channels=in_channels, image_size=images.images.shape[1],
                             dtype=compute_dtype(c.compute_dtype), seed=int(seed), **kwargs)
    _log(f"classifier {c.name} / {method} / seed {seed}: training on {images.counts()}")
    t0 = time.perf_counter()
    result = train_classifier(
        model, images.images, images.labels, tcfg, num_classes=len(class_names), val=(val.images, val.labels),
        positive=positive, workdir=str(run_dir), progress=self.progress,
        export_meta=dict(name=c.name, class_names=class_names, image_size=int(images.images.shape[1]),
                         in_channels=int(in_channels), kwargs=kwargs))
    best, _ = load_classifier(run_dir / "best", expect_name=c.name, expect_classes=class_names)
    np.savez(run_dir / "predictions.npz",
             val_proba=predict_proba(best, val.images, in_channels=in_channels), val_labels=val.labels,
             test_proba=predict_proba(best, test.images, in_channels=in_channels), test_labels=test.labels,
             class_names=np.array(class_names, dtype=object))
    return {"method": method, "seed": int(seed), "train_counts": images.counts(),
            "best_step": result.summary.get("best_step"), "wall_s": time.perf_counter() - t0}

  def stage_classifiers(self, out: pathlib.Path) -> dict:
    runs = {}
    for method in self.method_names():
      for seed in self.config.pipeline.seeds:
        runs[f"{method}_seed{seed}"] = self.train_one(method, int(seed), out / f"{method}_seed{seed}")
    (out / "runs.json").write_text(json.dumps(runs, indent=2))
    return {"runs": len(runs)}

  # -- report -----------------------------------------------------------------------------------------
  def stage_report(self, out: pathlib.Path) -> dict:
    from deepsmote_jax import evaluation, visualize
    cfg = self.config
    runs = json.loads((self.work / "classifiers" / "runs.json").read_text())
    results: dict[str, list] = {}
    per_run = {}
    for run_name, info in runs.items():
      r = _evaluate_predictions(cfg, self.work / "classifiers" / run_name / "predictions.npz", out / run_name,
                                f"{cfg.classifier.name}, {info['method']}, seed {info['seed']}")
      per_run[run_name] = r
      results.setdefault(info["method"], []).append(r)
    stage_times = {}
    for n in stage_names(cfg)[:-1]:
      done = self.work / n / "DONE.json"
      if done.is_file():
        stage_times[n] = json.loads(done.read_text())["wall_s"]
    figures = {}
    train = self.split("train")
    for p in cfg.pipeline.penalties:
      ds_dir = self.work / f"generate_{p}" / "dataset"
      if ds_dir.is_dir():
        synth, labels = read_synthetic(ds_dir, train.class_names)
        for ci, cname in enumerate(train.class_names):
          s, real = synth[labels == ci][:8], train.images[train.labels == ci][:8]
          if len(s) and len(real):
            n = min(len(s), len(real))
            figures[f"{p}_{cname}"] = str(visualize.side_by_side(real[:n], s[:n], out / f"real_vs_synthetic_{p}_{cname}.png"))
    table = evaluation.compare_table(results)
    md = [f"# DeepSMOTE comparison: {cfg.classifier.name} on {cfg.data.source} {cfg.data.get('root') or ''}".rstrip(),
          "", f"Seeds: {list(cfg.pipeline.seeds)}; test set: {self.split('test').counts()}; "
          f"training set (before oversampling): {train.counts()}.", "",
          f"Recall-first threshold: chosen on the validation split for NG recall >= {cfg.pipeline.target_recall}.",
          "", table, "", "## Stage wall times (s)", "",
          "| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in stage_times.items()]
    md += ["", "## Confusion tables (first seed of each method)", ""]
    for method, rs in results.items():
      md += [f"### {method}", "", evaluation.report_markdown(rs[0]), ""]
    if figures:
      md += ["## Real (left) vs synthetic (right) minority images", ""] + [f"![{k}]({pathlib.Path(v).name})"
                                                                         for k, v in figures.items()]
    (out / "report.md").write_text("\n".join(md))
    summary = {"methods": {m: _headline(rs) for m, rs in results.items()}, "stage_wall_s": stage_times,
               "runs": list(per_run), "figures": figures}
    (out / "report.json").write_text(json.dumps({"summary": summary, "runs": per_run}, indent=2, default=_nan_none))
    _write_json_atomic(out / "summary.json", summary)
    return {"methods": list(results)}


def _nan_none(o):
  return None


def _headline(results: list[dict]) -> dict:
  """Mean and spread over seeds of the numbers a quality engineer reads first."""
  def pick(r, *keys):
    v = r
    for k in keys:
      if not isinstance(v, dict) or k not in v:
        return float("nan")
      v = v[k]
    return float(v) if v is not None else float("nan")
  keys = {"accuracy": ("accuracy",), "acsa": ("acsa",), "g_mean": ("g_mean",), "macro_f1": ("macro_f1",), "ng_recall": ("binary", "recall"),
          "overkill_rate": ("binary", "overkill_rate"), "leak_rate": ("binary", "leak_rate"),
          "ng_recall_at_threshold": ("threshold", "test", "recall"),
          "overkill_at_threshold": ("threshold", "test", "overkill_rate")}
  out = {}
  for name, path in keys.items():
    vals = np.array([pick(r, *path) for r in results], float)
    out[name] = {"mean": float(np.nanmean(vals)) if np.isfinite(vals).any() else None,
                 "std": float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else None}
  return out


def _parse_strategy(value: Any):
  if isinstance(value, str):
    v = value.strip()
    if v.startswith("{"):
      return json.loads(v)
    try:
      return float(v)
    except ValueError:
      return v
  return value


def _append(base: ImageSet, images: np.ndarray, labels: np.ndarray) -> ImageSet:
  extra = ImageSet(images=images, labels=np.asarray(labels, np.int32), class_names=base.class_names,
                   files=[f"synthetic/{i}" for i in range(len(images))], skipped=[])
  return base.concat(extra) if len(images) else base


def read_synthetic(dataset_dir: pathlib.Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """The synthetic rows of a generated dataset's manifest.csv, as uint8 images and label indices."""
  import csv
  from PIL import Image
  rows = list(csv.DictReader((dataset_dir / "manifest.csv").open()))
  images, labels = [], []
  for row in rows:
    if str(row.get("synthetic")) in ("1", "True", "true"):
      arr = np.asarray(Image.open(dataset_dir / row["file"]))
      images.append(arr[..., None] if arr.ndim == 2 else arr)
      labels.append(class_names.index(row["class"]))
  if not images:
    return np.zeros((0, 1, 1, 1), np.uint8), np.zeros((0,), np.int32)
  return np.stack(images), np.asarray(labels, np.int32)


def summary_text(summary: dict, workdir: str | os.PathLike) -> str:
  """The final terminal summary: one line per method with the headline numbers (mean ± std over seeds)."""
  if not summary:
    return f"no report produced in {workdir}"
  def fmt(d):
    if not d or d.get("mean") is None:
      return "   n/a   "
    return f"{100 * d['mean']:5.1f}" + (f"±{100 * d['std']:.1f}" if d.get("std") is not None else "")
  lines = ["", f"{'method':<24}{'ACSA %':>12}{'NG recall %':>14}{'overkill %':>13}{'NG rec@thr %':>14}"
           f"{'overkill@thr %':>16}"]
  for method, h in summary["methods"].items():
    lines.append(f"{method:<24}{fmt(h['acsa']):>12}{fmt(h['ng_recall']):>14}{fmt(h['overkill_rate']):>13}"
                 f"{fmt(h['ng_recall_at_threshold']):>14}{fmt(h['overkill_at_threshold']):>16}")
  total = sum(summary.get("stage_wall_s", {}).values())
  lines += ["", f"stage wall times: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary.get("stage_wall_s", {}).items())
            + f" (total {total:.0f}s)", f"report: {pathlib.Path(workdir) / 'report' / 'report.md'}"]
  return "\n".join(lines)
