"""The main job: imbalanced images -> DeepSMOTE -> balanced set -> classifiers -> the with/without comparison.

The job is an explicit list of stages (`stages`), each filling its own folder of the workdir and finished by
an atomic `DONE.json` marker: `data` (load, split, make the training split scarce in NG),
`autoencoder_<penalty>` (train + export), `generate_<penalty>` (latent SMOTE -> balanced dataset folder),
`classifiers` (every method x seed: train, pick the best epoch on validation, predict validation and test),
`report` (metrics, recall-first thresholds, tables, figures). A rerun skips finished stages; the first
unfinished stage (a missing or half-written folder) and every stage after it are redone from scratch.

Methods compared: `none`, `class_weights`, `random_oversampling`, `smote_pixels` (SMOTE on flattened pixels),
`deepsmote` (one entry per penalty in `pipeline.penalties`).
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil

from deepsmote_jax import files
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.export import load_autoencoder
from deepsmote_jax.jobs import generate, prepare_data, report, stage
from deepsmote_jax.jobs.stage import Stage
from deepsmote_jax.jobs.train_autoencoder import train_and_export
from deepsmote_jax.jobs.train_classifier import BASELINES, sampling_strategy, train_one
from deepsmote_jax.train.autoencoder import PENALTIES

METHODS = BASELINES + ("deepsmote",)


def method_names(config) -> list[str]:
  """The compared methods, `deepsmote` expanded to one `deepsmote_<penalty>` per penalty."""
  names = []
  for m in config.pipeline.methods:
    names += [f"deepsmote_{p}" for p in config.pipeline.penalties] if m == "deepsmote" else [m]
  return names


def _autoencoder(config, work: pathlib.Path, penalty: str, progress: bool, out: pathlib.Path) -> dict:
  cfg = config.copy_and_resolve_references()
  cfg.train.penalty = penalty
  summary = train_and_export(cfg, str(out), progress=progress,
                             image_set=prepare_data.load_split(work / "data", "train"))
  return {"final_loss": summary.get("loss"), "steps": summary.get("final_step")}


def _generate(config, work: pathlib.Path, penalty: str, out: pathlib.Path) -> dict:
  model, _ = load_autoencoder(work / f"autoencoder_{penalty}" / "autoencoder")
  g = config.generate
  summary = generate.generate_dataset(model, prepare_data.load_split(work / "data", "train"), out / "dataset",
                                      sampling_strategy=sampling_strategy(g.sampling_strategy),
                                      k_neighbors=int(g.k_neighbors), kind=g.kind, seed=int(g.seed),
                                      copy_originals="png")
  return {"counts": summary.get("counts_after")}


def _classifiers(config, work: pathlib.Path, progress: bool, out: pathlib.Path) -> dict:
  runs = {}
  for method in method_names(config):
    for seed in config.pipeline.seeds:
      runs[f"{method}_seed{seed}"] = train_one(config, work, method, int(seed), out / f"{method}_seed{seed}",
                                               progress=progress)
  files.atomic_write_json(out / "runs.json", runs)
  return {"runs": len(runs)}


def stages(config, work: pathlib.Path, *, progress: bool = True, image_set: ImageSet | None = None) -> list[Stage]:
  """The stages of `config`, in the order they run."""
  penalties = list(config.pipeline.penalties) if "deepsmote" in config.pipeline.methods else []
  out = [Stage("data", functools.partial(prepare_data.run, config, image_set=image_set))]
  for p in penalties:
    out += [Stage(f"autoencoder_{p}", functools.partial(_autoencoder, config, work, p, progress), ("data",)),
            Stage(f"generate_{p}", functools.partial(_generate, config, work, p), ("data", f"autoencoder_{p}"))]
  generated = tuple(f"generate_{p}" for p in penalties)
  out.append(Stage("classifiers", functools.partial(_classifiers, config, work, progress), ("data",) + generated))
  names = [s.name for s in out]
  out.append(Stage("report", lambda d: report.run(config, work, d, names), ("data", "classifiers") + generated))
  return out


def stage_names(config) -> list[str]:
  return [s.name for s in stages(config, pathlib.Path("."))]


def validate_config(config) -> None:
  unknown = [m for m in config.pipeline.methods if m not in METHODS]
  if unknown:
    raise ValueError(f"config.pipeline.methods has unknown method(s) {unknown}; known: {list(METHODS)}")
  if not config.pipeline.seeds:
    raise ValueError("config.pipeline.seeds is empty")
  bad = [p for p in config.pipeline.penalties if p not in PENALTIES]
  if bad:
    raise ValueError(f"config.pipeline.penalties has unknown penalty {bad}; known: {list(PENALTIES)}")


def run_pipeline(config, workdir: str | os.PathLike, *, progress: bool = True, only: str | None = None,
                 image_set: ImageSet | None = None) -> dict:
  """Runs (or resumes) every stage; returns the report's summary. `only` runs one stage (its inputs must exist)."""
  validate_config(config)
  work = pathlib.Path(workdir)
  work.mkdir(parents=True, exist_ok=True)
  plan = stages(config, work, progress=progress, image_set=image_set)
  names = [s.name for s in plan]
  if only is not None:
    if only not in names:
      raise ValueError(f"unknown stage {only!r}; stages of this config: {names}")
    todo = [s for s in plan if s.name == only]
  else:
    first = next((i for i, s in enumerate(plan) if not stage.is_done(work / s.name)), len(plan))
    for s in plan[:first]:
      stage.log(f"stage {s.name}: done earlier, reused ({work / s.name})")
    todo = plan[first:]
    for s in todo:   # never build on a half-written or stale stage
      if (work / s.name).exists():
        shutil.rmtree(work / s.name)
  for s in todo:
    stage.run_stage(work / s.name, s.run)
  return json.loads((work / "report" / "summary.json").read_text()) if stage.is_done(work / "report") else {}


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
