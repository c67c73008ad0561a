"""The main job: imbalanced images -> DeepSMOTE -> balanced set -> classifiers -> the with/without comparison.

The job is an explicit list of stages (`stages`), each filling its own folder of the workdir and finished by
an atomic `DONE.json` marker holding the record of what built it (`stage.py`): `data` (load, split, make the
training split scarce in NG), `autoencoder_<penalty>` (train + export), `generate_<penalty>` (latent SMOTE
-> balanced dataset folder), `classifiers` (every method x seed: train, pick the best epoch on validation,
predict validation and test),
`report` (metrics, recall-first thresholds, tables, figures). A rerun reuses a finished stage only while its
settings and inputs are unchanged; from the first stage that changed or never finished, everything is
redone (an unfinished autoencoder continues from its checkpoints; a classifier run is kept while its own
record -- the settings and inputs it reads, `run_record` -- is unchanged, so adding a seed or a method trains
only the new runs).

Methods compared: `none`, `class_weights`, `random_oversampling`, `smote_pixels` (SMOTE on flattened pixels),
`anomaly_ae` (the one-class baseline: an encoder/decoder trained on OK images only, scored by reconstruction
error, `anomaly.py`), `deepsmote` (one entry per penalty in `pipeline.penalties`).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil

from deepsmote_jax import config_lib, evaluation, files, smote
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.export import load_autoencoder
from deepsmote_jax.jobs import anomaly, classifier_setup, generate, prepare_data, report, run_info, stage, tiled
from deepsmote_jax.jobs.classifier_setup import MODEL_KEYS, RUN_INFO
from deepsmote_jax.jobs.lock import WorkdirLock
from deepsmote_jax.jobs.stage import Stage
from deepsmote_jax.jobs.train_autoencoder import model_spec, train_and_export
from deepsmote_jax.jobs.train_classifier import BASELINES, train_one
from deepsmote_jax.models.classifiers import NAMES as classifier_names
from deepsmote_jax.train import distributed
from deepsmote_jax.train.autoencoder import PENALTIES, AETrainConfig
from deepsmote_jax.train.classifier import ClassifierTrainConfig
from deepsmote_jax.train.loop import describe_changes

METHODS = BASELINES + anomaly.METHODS + ("deepsmote",)


def method_names(config) -> list[str]:
  """The compared methods, `deepsmote` expanded to one `deepsmote_<penalty>` per penalty."""
  names = []
  for m in config.pipeline.methods:
    names += [f"deepsmote_{p}" for p in config.pipeline.penalties] if m == "deepsmote" else [m]
  return names


def _autoencoder(config, work: pathlib.Path, penalty: str, progress: bool, out: pathlib.Path, resume: bool) -> dict:
  cfg = config.copy_and_resolve_references()
  cfg.train.penalty = penalty
  train = prepare_data.load_split(work / "data", "train")
  # The validation split scores each epoch's reconstructions and picks the exported state (PSNR / SSIM).
  val = prepare_data.load_split(work / "data", "validation")
  if not len(val) or val.images.shape[1:] != train.images.shape[1:]:
    stage.log(f"autoencoder_{penalty}: no validation images of the training size; the last state is exported")
    val = None
  summary = train_and_export(cfg, str(out), progress=progress, resume=resume, image_set=train, val_set=val)
  return {
    "final_loss": summary.get("loss"),
    "steps": summary.get("final_step"),
    "resumed_from_step": summary.get("start_step"),
    "best_step": summary.get("best_step"),
    "validation": summary.get("validation"),
  }


def _generate(config, work: pathlib.Path, penalty: str, out: pathlib.Path, resume: bool) -> dict:
  model, _ = load_autoencoder(work / f"autoencoder_{penalty}" / "autoencoder")
  # Tiles: synthetic NG tiles only from NG sources (mask tiles, key tiles), balanced against the OK tiles.
  train = (
    tiled.generation_set(config, work, model)
    if tiled.is_tiled(config)
    else prepare_data.load_split(work / "data", "train")
  )
  summary = generate.generate_dataset(
    model,
    train,
    out / "dataset",
    **generate.oversampling(config),
    copy_originals="png",
    overwrite=True,
    data_split={**prepare_data.split_record(work / "data"), "split": "train"},
  )
  return {"counts": summary.get("counts_after")}


RUN_RECORD = "record.json"  # a classifier run's own record, written after its run.json
_RUN_LISTS = ("pipeline.methods", "pipeline.seeds", "pipeline.penalties")  # which runs exist, not what one is
_ONE_CLASS_SETTINGS = ("model", "train", "pipeline.anomaly_window")  # read by one-class runs only


def run_record(stage_record: dict, method: str, seed: int, work: pathlib.Path) -> dict:
  """One classifier run's record: what of the classifiers stage's record that run reads -- not the lists of
  methods, seeds and penalties, the autoencoder settings only for a one-class run, the generate stage of its
  own penalty only -- and the ids of the finished stages it reads (`stage.made_id`: a rerun of one, even with
  the same record, retrains the runs that read it). Adding a seed, a method or a penalty keeps every finished
  run whose record is unchanged."""
  one_class = method in anomaly.METHODS
  reads = {"data"} | ({f"generate_{method.split('_', 1)[1]}"} if method.startswith("deepsmote_") else set())
  rec = {
    "method": method,
    "seed": int(seed),
    "settings": {
      k: v
      for k, v in stage_record["settings"].items()
      if k not in _RUN_LISTS and (one_class or k not in _ONE_CLASS_SETTINGS)
    },
    "upstream": {u: d for u, d in stage_record["upstream"].items() if u in reads},
    "made": {u: stage.made_id(work / u) for u in sorted(reads)},
  }
  if "inputs" in stage_record:
    rec["inputs"] = stage_record["inputs"]
  return rec


def _classifiers(config, work: pathlib.Path, progress: bool, out: pathlib.Path, resume: bool) -> dict:
  """Every method x seed. The folder is kept from earlier runs of the stage (`keeps_parts`): a run that
  finished (run.json, then its record) with the record it would have now is kept, any other retrained."""
  del resume  # always resumed: each run is checked against its own record instead
  stage_record = stage.read_record(out, stage.STARTED)
  runs, kept = {}, 0
  for seed in config.pipeline.seeds:  # seed-major: after the first seed every method has a result
    for method in method_names(config):
      name = f"{method}_seed{seed}"
      rec = run_record(stage_record, method, int(seed), work) if stage_record is not None else None
      finished = (out / name / RUN_INFO).is_file() and stage.read_json(out / name / RUN_RECORD) == rec
      if rec is not None and distributed.from_primary(int(finished)):
        runs[name], kept = json.loads((out / name / RUN_INFO).read_text()), kept + 1
        stage.log(f"classifier run {name}: finished earlier with the same settings and inputs, kept")
        continue
      if (out / name).exists():
        shutil.rmtree(out / name)
      train = anomaly.train_one if method in anomaly.METHODS else train_one
      runs[name] = train(config, work, method, int(seed), out / name, progress=progress)
      if rec is not None:
        files.atomic_write_json(out / name / RUN_RECORD, rec)
  files.atomic_write_json(out / "runs.json", runs)
  return {"runs": len(runs), "kept_from_earlier": kept}


def stages(config, work: pathlib.Path, *, progress: bool = True, image_set: ImageSet | None = None) -> list[Stage]:
  """The stages of `config`, in the order they run, with what each reads."""
  penalties = list(config.pipeline.penalties) if "deepsmote" in config.pipeline.methods else []
  out = [
    Stage(
      "data",
      lambda d, _: prepare_data.run(config, d, image_set=image_set),
      settings=prepare_data.SETTINGS,
    )
  ]
  for p in penalties:
    out += [
      Stage(
        f"autoencoder_{p}",
        functools.partial(_autoencoder, config, work, p, progress),
        ("data",),
        settings=("model", "train"),
        resumable=True,
      ),
      Stage(
        f"generate_{p}",
        functools.partial(_generate, config, work, p),
        ("data", f"autoencoder_{p}"),
        settings=("generate",),
      ),
    ]
  generated = tuple(f"generate_{p}" for p in penalties)
  out.append(
    Stage(
      "classifiers",
      functools.partial(_classifiers, config, work, progress),
      ("data",) + generated,
      settings=(
        "classifier",
        "generate",
        *(("model", "train", "pipeline.anomaly_window") if set(config.pipeline.methods) & set(anomaly.METHODS) else ()),
        "pipeline.methods",
        "pipeline.penalties",
        "pipeline.seeds",
        "pipeline.positive_class",
      ),
      keeps_parts=True,
    )
  )
  names = [s.name for s in out]
  out.append(
    Stage(
      "report",
      lambda d, _: report.run(config, work, d, names),
      ("data", "classifiers") + generated,
      settings=("pipeline",),
    )
  )
  return out


def stage_names(config) -> list[str]:
  return [s.name for s in stages(config, pathlib.Path("."))]


# Settings added after runs were recorded, with the default that reproduces those runs.
_NEWER_SETTINGS = {("train", "edge_weight"): 0.0, ("generate", "synthesis"): "decode"}


def records(config, plan: list[Stage], image_set: ImageSet | None = None) -> dict[str, dict]:
  """Each stage's record: its settings, its own inputs (the data stage: the image source) and the digests
  of the records of the stages it reads."""
  out: dict[str, dict] = {}
  for s in plan:
    if s.name == "data":  # the same record as the standalone jobs' data stage, so either folder is a --split
      out[s.name] = prepare_data.record(config, image_set)
      continue
    rec = {
      "settings": files.json_safe({key: stage.setting(config, key) for key in s.settings}),
      "upstream": {u: stage.digest(out[u]) for u in s.inputs},
    }
    if s.name.startswith("autoencoder_"):
      rec["settings"]["train"]["penalty"] = s.name.split("_", 1)[1]
    for section, key in _NEWER_SETTINGS:  # at their default, left out: records from before them stay valid
      if rec["settings"].get(section, {}).get(key, None) == _NEWER_SETTINGS[section, key]:
        del rec["settings"][section][key]
    if "classifier" in rec["settings"]:
      weights = classifier_setup.weights_fingerprint(config)
      if weights is None:  # records of runs from before the setting stay valid
        rec["settings"]["classifier"].pop("weights", None)
      else:  # another file at the same path reruns the stage too
        rec["inputs"] = files.json_safe({"classifier.weights": weights})
    out[s.name] = rec
  return out


def validate_config(config, *, image_set: ImageSet | None = None) -> None:
  """Every section checked before the first stage runs; each error names `config.<section>.<key>`."""
  prepare_data.tile_settings(config)  # checked: a bad config.data.patches is a one-line error
  unknown = [m for m in config.pipeline.methods if m not in METHODS]
  if unknown:
    raise ValueError(f"config.pipeline.methods has unknown method(s) {unknown}; known: {list(METHODS)}")
  if not config.pipeline.seeds:
    raise ValueError("config.pipeline.seeds is empty")
  bad = [p for p in config.pipeline.penalties if p not in PENALTIES]
  if bad:
    raise ValueError(f"config.pipeline.penalties has unknown penalty {bad}; known: {list(PENALTIES)}")
  evaluation.threshold_settings(config.pipeline)  # target recall, threshold rule, bootstrap
  try:
    spec = model_spec(config)
  except ValueError as e:
    raise ValueError(f"config.model: {e}") from None
  window = config.pipeline.anomaly_window
  if not isinstance(window, int) or not 0 <= window <= spec.image_size:
    raise ValueError(f"config.pipeline.anomaly_window={window!r}: pixels in [0, {spec.image_size}] (the model's size)")
  for p in config.pipeline.penalties:
    config_lib.to_dataclass(AETrainConfig, config.train, "train", penalty=p)
  config_lib.to_dataclass(ClassifierTrainConfig, config.classifier, "classifier", ignore=MODEL_KEYS)
  if config.classifier.name not in classifier_names:
    raise ValueError(f"config.classifier.name={config.classifier.name!r}: choose one of {list(classifier_names)}")
  classifier_setup.check_weights(config)
  g = config.generate
  if g.kind not in smote.KINDS:
    raise ValueError(f"config.generate.kind={g.kind!r}: choose one of {smote.KINDS}")
  if int(g.k_neighbors) < 1:
    raise ValueError(f"config.generate.k_neighbors must be >= 1, got {g.k_neighbors}")
  generate.oversampling(config)  # sampling_strategy and synthesis, as the generate stage reads them
  ratios = tuple(config.split.ratios)
  if len(ratios) != 3 or min(ratios) < 0 or not sum(ratios) > 0:
    raise ValueError(f"config.split.ratios must be three non-negative shares (train, validation, test), got {ratios}")
  if float(config.imbalance.minority_ratio) < 0 or int(config.imbalance.ok_count) < 0:
    raise ValueError("config.imbalance.ok_count and config.imbalance.minority_ratio must be >= 0")
  if image_set is None and config.data.get("source", "folder") == "folder":
    root = config.data.get("root") or ""
    if not root:
      raise ValueError("config.data.root is empty: set --config.data.root=/path/to/images (one subfolder per class)")
    if not pathlib.Path(root).is_dir():
      raise ValueError(f"config.data.root={root!r} is not a folder")


def _plan_runs(plan: list[Stage], recs: dict[str, dict], work: pathlib.Path) -> tuple[int, bool]:
  """(index of the first stage to run, whether it resumes its unfinished folder); says why."""
  for i, s in enumerate(plan):
    folder = work / s.name
    done = stage.read_record(folder) if stage.is_done(folder) else None
    if done == recs[s.name]:
      stage.log(f"stage {s.name}: done earlier with the same settings and inputs, reused")
      continue
    if done is not None:
      kept = "; its parts with unchanged settings and inputs are kept" if s.keeps_parts else ""
      stage.log(f"stage {s.name}: redone, its settings or inputs changed: {describe_changes(done, recs[s.name])}{kept}")
      return i, False
    started = stage.read_record(folder, stage.STARTED) if folder.is_dir() else None
    resume = s.resumable and started == recs[s.name]
    if folder.is_dir():
      how = "continuing it" if resume else "keeping its unchanged parts" if s.keeps_parts else "starting it over"
      stage.log(f"stage {s.name}: unfinished earlier; {how}")
    return i, resume
  return len(plan), False


def run_pipeline(
  config,
  workdir: str | os.PathLike,
  *,
  progress: bool = True,
  only: str | None = None,
  image_set: ImageSet | None = None,
) -> dict:
  """Runs (or resumes) every stage; returns the report's summary. `only` runs one stage (its inputs must
  exist) and invalidates the stages after it. One run per workdir at a time."""
  validate_config(config, image_set=image_set)
  work = pathlib.Path(workdir)
  work.mkdir(parents=True, exist_ok=True)
  with WorkdirLock(work):
    run_info.write(config, work)  # config, versions, devices, commit, start time; read by no stage
    plan = stages(config, work, progress=progress, image_set=image_set)
    recs = records(config, plan, image_set)
    names = [s.name for s in plan]
    if only is not None:
      if only not in names:
        raise ValueError(f"unknown stage {only!r}; stages of this config: {names}")
      i = names.index(only)
      missing = [u for u in plan[i].inputs if not stage.is_done(work / u)]
      if missing:
        raise ValueError(f"stage {only!r} needs the finished stage(s) {missing} in {work}; run the pipeline first")
      started = stage.read_record(work / only, stage.STARTED) if not stage.is_done(work / only) else None
      todo, resume = [plan[i]], bool(distributed.from_primary(plan[i].resumable and started == recs[only]))
      resume = resume or plan[i].keeps_parts
      for later in plan[i + 1 :]:  # built on the old outputs: no longer valid
        (work / later.name / stage.DONE).unlink(missing_ok=True)
    else:
      # Decided once from the workdir as process 0 sees it, before any process writes to it.
      first, resume = (int(v) for v in distributed.from_primary(_plan_runs(plan, recs, work)))
      todo = plan[first:]
    for k, s in enumerate(todo):
      stage.run_stage(work / s.name, s.run, recs[s.name], resume=(resume and k == 0) or s.keeps_parts)
    distributed.barrier("pipeline: end")  # process 0 has written the last DONE.json
    return json.loads((work / "report" / "summary.json").read_text()) if stage.is_done(work / "report") else {}


def summary_text(summary: dict, workdir: str | os.PathLike) -> str:
  """The final terminal summary: one line per method with the headline numbers (mean ± std over seeds)."""
  if not summary:
    return f"no report produced in {workdir}"

  def fmt(d):
    if not d or d.get("mean") is None:
      return "   n/a   "
    return f"{100 * d['mean']:5.1f}" + (f"±{100 * d['std']:.1f}" if d.get("std") is not None else "")

  lines = [
    "",
    f"{'method':<24}{'ACSA %':>12}{'NG recall %':>14}{'overkill %':>13}{'NG rec@thr %':>14}{'overkill@thr %':>16}",
  ]
  for method, h in summary["methods"].items():
    lines.append(
      f"{method:<24}{fmt(h['acsa']):>12}{fmt(h['ng_recall']):>14}{fmt(h['overkill_rate']):>13}"
      f"{fmt(h['ng_recall_at_threshold']):>14}{fmt(h['overkill_at_threshold']):>16}"
    )
  total = sum(summary.get("stage_wall_s", {}).values())
  lines += [
    "",
    "stage wall times: "
    + ", ".join(f"{k} {v:.0f}s" for k, v in summary.get("stage_wall_s", {}).items())
    + f" (total {total:.0f}s)",
    f"report: {pathlib.Path(workdir) / 'report' / 'report.md'} (one page: report.html beside it)",
  ]
  return "\n".join(lines)
