"""The main job end to end on a tiny config: every stage's outputs exist and agree; reruns redo only what changed."""

from __future__ import annotations

import csv
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from deepsmote_jax import config_lib, evaluation, files
from deepsmote_jax.data.folder import save_image_folder
from deepsmote_jax.export import load_autoencoder
from deepsmote_jax.jobs import pipeline, prepare_data, stage
from deepsmote_jax.jobs.pipeline import run_pipeline, stage_names
from deepsmote_jax.models.autoencoder import build_autoencoder
from deepsmote_jax.train import loop
from deepsmote_jax.train.autoencoder import AETrainConfig, train_autoencoder


def _write_images(root, counts=(("NG", 14), ("OK", 40)), size=16, seed=0):
  rng = np.random.default_rng(seed)
  images, labels = [], []
  yy, xx = np.mgrid[:size, :size]
  for label, (name, n) in enumerate(counts):
    for _ in range(n):
      img = rng.normal(120, 12, (size, size))
      if name == "NG":  # a dark round dent at a random place
        cy, cx = rng.integers(4, size - 4, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 6] -= 90
      images.append(np.clip(img, 0, 255).astype(np.uint8)[..., None])
      labels.append(label)
  save_image_folder(np.stack(images), np.array(labels), [c for c, _ in counts], root)
  return root


def tiny_config(root):
  from deepsmote_jax import config_lib

  c = config_lib.autoencoder_config(preset="micro_16", channels=1, epochs=2, batch_size=8)
  c.data.source = "folder"
  c.data.root = str(root)
  c.train.penalty_sample_size = 8
  c.train.steps_per_call = 4
  c.train.compute_dtype = "float32"
  c.checkpoint.every_steps = 0
  c.split.ratios = (0.5, 0.25, 0.25)
  c.classifier.epochs = 2
  c.classifier.batch_size = 8
  c.classifier.steps_per_call = 4
  c.classifier.max_shift = 1
  c.classifier.compute_dtype = "float32"
  c.pipeline.seeds = (0,)
  c.pipeline.positive_class = "NG"
  return c


def _mtimes(work):
  return {n: (work / n / "DONE.json").stat().st_mtime_ns for n in stage_names(tiny_config("x"))}


@pytest.mark.slow
def test_pipeline_end_to_end_and_resume(tmp_path):
  root = _write_images(tmp_path / "images")
  work = tmp_path / "run"
  config = tiny_config(root)
  summary = run_pipeline(config, work, progress=False)
  names = stage_names(config)
  assert names == ["data", "autoencoder_reference", "generate_reference", "classifiers", "report"]
  for n in names:
    assert (work / n / "DONE.json").is_file(), n

  # Generated dataset: manifest lists exactly the files on disk; counts balance the training split.
  ds_dir = work / "generate_reference" / "dataset"
  rows = list(csv.DictReader((ds_dir / "manifest.csv").open()))
  on_disk = sorted(str(p.relative_to(ds_dir)) for p in ds_dir.glob("*/*.png") if p.parent.name != "grids")
  assert sorted(r["file"] for r in rows) == on_disk
  train_counts = json.loads((work / "data" / "DONE.json").read_text())["counts"]["train"]
  per_class = {c: sum(r["class"] == c for r in rows) for c in train_counts}
  assert per_class["NG"] == per_class["OK"] == max(train_counts.values())
  synthetic = [r for r in rows if r["synthetic"] == "1"]
  assert len(synthetic) == train_counts["OK"] - train_counts["NG"] and all(r["class"] == "NG" for r in synthetic)

  # Report: every method present; its numbers recompute from the saved predictions.
  assert set(summary["methods"]) == {
    "none",
    "class_weights",
    "random_oversampling",
    "smote_pixels",
    "deepsmote_reference",
  }
  report = json.loads((work / "report" / "report.json").read_text())
  for run, saved in report["runs"].items():
    with np.load(work / "classifiers" / run / "predictions.npz", allow_pickle=True) as z:
      again = evaluation.evaluate(
        z["test_labels"],
        z["test_proba"],
        list(z["class_names"]),
        positive_class="NG",
        val_true=z["val_labels"],
        val_scores=z["val_proba"],
      )
      cm = np.asarray(again["confusion_matrix"])
      assert cm.sum() == len(z["test_labels"])
      # predictions.csv: one row per validation and test image, the same scores, the report's decisions.
      rows = list(csv.DictReader((work / "classifiers" / run / "predictions.csv").open()))
      test_rows = [r for r in rows if r["split"] == "test"]
      ng = list(z["class_names"]).index("NG")
      assert len(rows) == len(z["val_labels"]) + len(z["test_labels"])
      np.testing.assert_allclose([float(r["p_NG"]) for r in test_rows], z["test_proba"][:, ng], rtol=1e-5)
      assert [r["actual"] for r in test_rows] == [z["class_names"][y] for y in z["test_labels"]]
      assert sum(r["NG_at_threshold"] == "True" for r in test_rows) == saved["threshold"]["test"]["n_flagged"]
    assert np.asarray(saved["confusion_matrix"]).tolist() == cm.tolist()
    # The exported model carries the report's recall-first threshold (chosen on the same validation split).
    decision = json.loads((work / "classifiers" / run / "best" / "decision.json").read_text())
    assert decision["positive_class"] == "NG"
    assert decision["threshold"]["value_score"] == pytest.approx(saved["threshold"]["value_score"])
    assert saved["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
  md = (work / "report" / "report.md").read_text()
  assert "Table 1 layout" in md and "| none |" in md and "deepsmote_reference" in md
  for method, h in summary["methods"].items():
    assert h["acsa"]["mean"] is not None, method

  # Rerun after deleting one stage's output: that stage and the later ones are redone, earlier ones reused.
  before = _mtimes(work)
  shutil.rmtree(work / "generate_reference")
  run_pipeline(config, work, progress=False)
  after = _mtimes(work)
  assert after["data"] == before["data"] and after["autoencoder_reference"] == before["autoencoder_reference"]
  for n in ("generate_reference", "classifiers", "report"):
    assert after[n] != before[n], n
  # The baselines read only the data stage: kept; DeepSMOTE read the regenerated set: retrained.
  done = json.loads((work / "classifiers" / stage.DONE).read_text())
  assert done["runs"] == 5 and done["kept_from_earlier"] == 4
  retrained = json.loads((work / "classifiers" / "deepsmote_reference_seed0" / pipeline.RUN_RECORD).read_text())
  assert retrained["made"]["generate_reference"] == stage.made_id(work / "generate_reference")
  # One method fewer: the classifiers stage reruns (its list changed) and keeps every remaining run.
  fewer = config.copy_and_resolve_references()
  fewer.pipeline.methods = tuple(m for m in config.pipeline.methods if m != "class_weights")
  run_pipeline(fewer, work, progress=False)
  done = json.loads((work / "classifiers" / stage.DONE).read_text())
  assert done["runs"] == 4 and done["kept_from_earlier"] == 4
  assert "class_weights_seed0" not in json.loads((work / "classifiers" / "runs.json").read_text())
  run_pipeline(config, work, progress=False)  # back: its folder is still there, with its record: kept
  assert json.loads((work / "classifiers" / stage.DONE).read_text())["kept_from_earlier"] == 5
  _changed_settings_redo_from_the_first_changed_stage(config, work)
  _killed_runs_continue_and_end_equal(config, work, tmp_path)


def _changed_settings_redo_from_the_first_changed_stage(config, work):
  """The plan, without running: a changed setting or input redoes from the first stage that reads it."""

  def first_to_run(cfg):
    plan = pipeline.stages(cfg, work)
    first, _ = pipeline._plan_runs(plan, pipeline.records(cfg, plan), pathlib.Path(work))
    return plan[first].name if first < len(plan) else None

  assert first_to_run(config) is None  # unchanged: everything reused
  cases = [
    ("classifier.epochs", 3, "classifiers"),
    ("generate.k_neighbors", 3, "generate_reference"),
    ("train.epochs", 3, "autoencoder_reference"),
    ("split.seed", 1, "data"),
    ("pipeline.target_recall", 0.9, "report"),
  ]
  for key, value, stage_name in cases:
    changed = config.copy_and_resolve_references()
    section, name = key.split(".")
    changed[section][name] = value
    assert first_to_run(changed) == stage_name, key
  # A file added to the data folder changes the data stage's input fingerprint.
  extra = pathlib.Path(config.data.root) / "OK" / "added.png"
  shutil.copy(next((pathlib.Path(config.data.root) / "OK").glob("*.png")), extra)
  try:
    assert first_to_run(config) == "data"
  finally:
    extra.unlink()
  assert first_to_run(config) is None


def _killed_runs_continue_and_end_equal(config, work, tmp_path):
  """A run killed mid-autoencoder (checkpoints, no DONE) continues from them; one killed mid-classifiers keeps
  its finished runs; both end equal to the uninterrupted run in `work`."""
  work2 = tmp_path / "killed"
  shutil.copytree(work / "data", work2 / "data")
  recs = pipeline.records(config, pipeline.stages(config, work2))
  ae_dir = work2 / "autoencoder_reference"
  files.atomic_write_json(ae_dir / stage.STARTED, {"record": recs["autoencoder_reference"]})
  cfg = config_lib.to_dataclass(AETrainConfig, config.train, "train", penalty="reference")
  train = prepare_data.load_split(work2 / "data", "train")
  train_autoencoder(
    build_autoencoder("micro_16", channels=1),
    train.images,
    train.labels,
    cfg,
    num_classes=len(train.class_names),
    workdir=str(ae_dir),
    checkpoint_every_steps=2,
    stop_after_steps=2,
    progress=False,
  )  # what a kill after the first checkpoint leaves
  run_pipeline(config, work2, progress=False, only="autoencoder_reference")
  done = json.loads((ae_dir / stage.DONE).read_text())
  assert done["resumed_from_step"] == 2 and done["steps"] > 2
  a, _ = load_autoencoder(work / "autoencoder_reference" / "autoencoder")
  b, _ = load_autoencoder(ae_dir / "autoencoder")
  for x, y in zip(jax.tree.leaves(loop.split_model(a)[1:]), jax.tree.leaves(loop.split_model(b)[1:])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Mid-classifiers: DONE gone and one run unfinished (no run.json): only that run is retrained.
  (work / "classifiers" / stage.DONE).unlink()
  (work / "report" / stage.DONE).unlink()
  (work / "classifiers" / "none_seed0" / "run.json").unlink()
  report_before = json.loads((work / "report" / "report.json").read_text())["runs"]
  run_pipeline(config, work, progress=False)
  done = json.loads((work / "classifiers" / stage.DONE).read_text())
  assert done["runs"] == 5 and done["kept_from_earlier"] == 4
  assert json.loads((work / "report" / "report.json").read_text())["runs"] == report_before


def test_a_classifier_run_record_holds_only_what_the_run_reads(tmp_path):
  for name in ("data", "generate_reference", "generate_paper"):
    stage.run_stage(tmp_path / name, lambda d, r: {}, {"settings": {}})
  stage_record = {
    "settings": {
      "classifier": {"epochs": 2},
      "generate": {"k_neighbors": 5},
      "model": {"preset": "micro_16"},
      "train": {"epochs": 2},
      "pipeline.anomaly_window": 0,
      "pipeline.methods": ["none", "anomaly_ae", "deepsmote"],
      "pipeline.penalties": ["reference", "paper"],
      "pipeline.seeds": [0],
      "pipeline.positive_class": "NG",
    },
    "upstream": {"data": "d1", "generate_reference": "g1", "generate_paper": "g2"},
  }
  rec = {m: pipeline.run_record(stage_record, m, 0, tmp_path) for m in ("none", "anomaly_ae", "deepsmote_reference")}
  assert set(rec["none"]["settings"]) == {"classifier", "generate", "pipeline.positive_class"}
  assert set(rec["anomaly_ae"]["settings"]) == set(rec["none"]["settings"]) | {
    "model",
    "train",
    "pipeline.anomaly_window",
  }
  assert rec["none"]["upstream"] == {"data": "d1"} and set(rec["none"]["made"]) == {"data"}
  assert rec["deepsmote_reference"]["upstream"] == {"data": "d1", "generate_reference": "g1"}
  # Other lists of methods, seeds and penalties: the same records.
  other = json.loads(json.dumps(stage_record))
  other["settings"].update({"pipeline.methods": ["deepsmote"], "pipeline.seeds": [0, 1, 2]})
  other["settings"]["pipeline.penalties"] = ["reference"]
  del other["upstream"]["generate_paper"]
  assert pipeline.run_record(other, "deepsmote_reference", 0, tmp_path) == rec["deepsmote_reference"]
  assert pipeline.run_record(other, "deepsmote_reference", 1, tmp_path) != rec["deepsmote_reference"]
  # A setting a run reads, or a rerun of a stage it reads (same record, new id): another record.
  other["settings"]["classifier"] = {"epochs": 3}
  assert pipeline.run_record(other, "none", 0, tmp_path) != rec["none"]
  stage.run_stage(tmp_path / "generate_reference", lambda d, r: {}, {"settings": {}})
  assert pipeline.run_record(stage_record, "deepsmote_reference", 0, tmp_path) != rec["deepsmote_reference"]
  assert pipeline.run_record(stage_record, "none", 0, tmp_path) == rec["none"]


def test_bad_inputs_fail_with_clear_messages(tmp_path):
  one_class = _write_images(tmp_path / "one", counts=(("OK", 6),))
  with pytest.raises(ValueError, match="only one class"):
    run_pipeline(tiny_config(one_class), tmp_path / "w1", progress=False)
  root = _write_images(tmp_path / "imgs", counts=(("dent", 6), ("OK", 10)))
  with pytest.raises(ValueError, match="positive_class='NG'"):
    run_pipeline(tiny_config(root), tmp_path / "w2", progress=False)
  bad = tiny_config(root)
  bad.pipeline.methods = ("none", "smote_magic")
  with pytest.raises(ValueError, match="smote_magic"):
    run_pipeline(bad, tmp_path / "w3", progress=False)
  # A stage that failed half-way leaves no DONE marker, so the next run redoes it.
  assert not (tmp_path / "w2" / "data" / "DONE.json").exists()
  # Every section is checked before the first stage runs, and the error names the setting.
  for key, value, message in (
    ("classifier.epochs", 0, "config.classifier.epochs must be >= 1, got 0"),
    ("train.penalty_sample_size", 0, "config.train.penalty_sample_size must be >= 1"),
    ("classifier.optimiser", "adam", r"config.classifier has unknown setting\(s\) \['optimiser'\]"),
    ("generate.kind", "smoat", "config.generate.kind='smoat'"),
    ("generate.synthesis", "blend", "config.generate.synthesis='blend': choose one of"),
    ("train.edge_weight", -1.0, "config.train.edge_weight must be >= 0"),
    ("model.preset", "nope", "unknown autoencoder preset 'nope'"),
    ("pipeline.threshold_rule", "quantile", "config.pipeline.threshold_rule='quantile': choose one of"),
    ("pipeline.target_recall", 1.5, r"config.pipeline.target_recall must be in \(0, 1\]"),
  ):
    bad = tiny_config(root)
    section, name = key.split(".")
    bad[section][name] = value
    with pytest.raises(ValueError, match=message):
      run_pipeline(bad, tmp_path / "w4", progress=False)
    assert not (tmp_path / "w4").exists(), key  # nothing ran, nothing was created


def test_command_line_errors_are_one_line_with_exit_code_2(tmp_path):
  import subprocess
  import sys

  root = _write_images(tmp_path / "imgs")
  cmd = [
    sys.executable,
    str(pathlib.Path(__file__).parents[1] / "scripts" / "run_pipeline.py"),
    "--config",
    str(pathlib.Path(__file__).parents[1] / "configs" / "default.py"),
    "--config.data.source=folder",
    f"--config.data.root={root}",
    "--config.classifier.epochs=0",
    f"--workdir={tmp_path / 'w'}",
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines[-1] == "error: config.classifier.epochs must be >= 1, got 0" and "Traceback" not in proc.stderr
  proc = subprocess.run(cmd + ["--verbose"], capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_train_classifier_job_with_synthetic_images(tmp_path):
  """scripts/train_classifier.py's job: split, train one classifier with extra synthetic images, evaluate."""
  from deepsmote_jax.data.folder import save_image_folder as save
  from deepsmote_jax.jobs.train_classifier import train_classifier_job

  root = _write_images(tmp_path / "images")
  synth = tmp_path / "synthetic"
  imgs = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 1)).astype(np.uint8)
  written = save(imgs, np.array([0, 0, 0, 0]), ["NG", "OK"], synth)
  with (synth / "manifest.csv").open("w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["file", "class", "synthetic"])
    w.writerows([[name, "NG", 1] for name in written])
  config = tiny_config(root)
  info = train_classifier_job(
    config, tmp_path / "work", method="class_weights", synthetic_dir=str(synth), progress=False
  )
  assert (
    info["train_counts"]["NG"]
    == json.loads((tmp_path / "work" / "data" / "DONE.json").read_text())["counts"]["train"]["NG"] + 4
  )
  assert (tmp_path / "work" / "classifier" / "best" / "meta.json").is_file()
  assert (tmp_path / "work" / "evaluation" / "metrics.json").is_file() and 0 <= info["test"]["accuracy"] <= 1
  before = (tmp_path / "work" / "data" / "DONE.json").stat().st_mtime_ns
  train_classifier_job(config, tmp_path / "work", method="none", progress=False)
  assert (tmp_path / "work" / "data" / "DONE.json").stat().st_mtime_ns == before  # split reused


def test_stages_are_an_explicit_list_with_inputs(tmp_path):
  from deepsmote_jax.jobs.pipeline import stages

  config = tiny_config(tmp_path)
  config.pipeline.penalties = ("reference", "paper")
  plan = stages(config, pathlib.Path(tmp_path))
  assert [s.name for s in plan] == [
    "data",
    "autoencoder_reference",
    "generate_reference",
    "autoencoder_paper",
    "generate_paper",
    "classifiers",
    "report",
  ]
  inputs = {s.name: s.inputs for s in plan}
  assert inputs["generate_paper"] == ("data", "autoencoder_paper")
  assert inputs["classifiers"] == ("data", "generate_reference", "generate_paper")
  config.pipeline.methods = ("none", "class_weights")
  assert [s.name for s in stages(config, pathlib.Path(tmp_path))] == ["data", "classifiers", "report"]


def test_settings_added_later_leave_older_records_valid_at_their_default(tmp_path):
  """train.edge_weight and generate.synthesis at their defaults are not in the stage records (a run recorded
  before they existed is reused, not redone); set otherwise, they are, and so change what is redone."""
  from deepsmote_jax.jobs.pipeline import records, stages

  config = tiny_config(tmp_path)
  plan = stages(config, pathlib.Path(tmp_path))
  recs = records(config, plan)
  assert "edge_weight" not in recs["autoencoder_reference"]["settings"]["train"]
  assert "synthesis" not in recs["generate_reference"]["settings"]["generate"]
  config.train.edge_weight, config.generate.synthesis = 0.5, "residual"
  changed = records(config, plan)
  assert changed["autoencoder_reference"]["settings"]["train"]["edge_weight"] == 0.5
  assert changed["generate_reference"]["settings"]["generate"]["synthesis"] == "residual"
  assert changed["data"] == recs["data"] and changed["classifiers"] != recs["classifiers"]


def test_stage_marks_done_only_when_finished(tmp_path):
  out = tmp_path / "s"

  def boom(folder):
    (folder / "partial.txt").write_text("x")
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    stage.run_stage(out, lambda folder, _: boom(folder))
  assert not stage.is_done(out)
  info = stage.run_stage(out, lambda folder, _: {"n": 1})
  assert stage.is_done(out) and info == {"n": 1} and not (out / "partial.txt").exists()
  assert json.loads((out / stage.DONE).read_text())["n"] == 1


def test_training_script_is_quiet_and_refuses_to_mix_runs(tmp_path):
  """A training run's stderr holds progress, not third-party INFO logs; a second run into the same workdir
  stops with one line until told to resume or overwrite."""
  import subprocess
  import sys

  root = _write_images(tmp_path / "imgs")
  repo = pathlib.Path(__file__).parents[1]
  cmd = [
    sys.executable,
    str(repo / "scripts" / "train_autoencoder.py"),
    "--config",
    str(repo / "configs" / "default.py"),
    "--config.data.source=folder",
    f"--config.data.root={root}",
    "--config.model.preset=micro_16",
    "--config.train.epochs=2",
    "--config.train.batch_size=8",
    "--config.train.penalty_sample_size=8",
    "--config.checkpoint.every_steps=2",
    f"--workdir={tmp_path / 'ae'}",
  ]
  env = {**__import__("os").environ, "DEEPSMOTE_JAX_CACHE": ""}
  first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
  assert first.returncode == 0, first.stderr[-3000:]
  lines = [line for line in first.stderr.replace("\r", "\n").splitlines() if line.strip()]
  noisy = [line for line in lines if line.startswith(("I1", "I0", "INFO")) or "orbax" in line.lower()]
  assert not noisy, noisy[:5]
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
  assert again.returncode == 2
  assert again.stderr.strip().splitlines()[-1].startswith("error: ") and "--resume" in again.stderr
  resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600, env=env)
  assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_a_class_without_training_images_is_an_error(tmp_path):
  root = _write_images(tmp_path / "imgs", counts=(("NG", 14), ("OK", 40), ("rare", 1)))
  config = tiny_config(root)
  config.data.min_per_class = 1
  out = tmp_path / "data"
  out.mkdir()
  with pytest.raises(ValueError, match=r"class 'rare' has no images in split 'validation'"):
    prepare_data.run(config, out)


@pytest.mark.slow
def test_streamed_pipeline_equals_the_in_memory_one(tmp_path):
  """config.data.stream=true (images listed, decoded step by step) gives the in-memory run's numbers."""
  root = _write_images(tmp_path / "images")
  probas = {}
  for stream in ("false", "true"):
    config = tiny_config(root)
    config.data.stream = stream
    config.pipeline.methods = ("class_weights", "random_oversampling", "deepsmote")
    run_pipeline(config, tmp_path / stream, progress=False)
    runs = sorted(p.parent.name for p in (tmp_path / stream / "classifiers").glob("*/predictions.npz"))
    probas[stream] = {r: np.load(tmp_path / stream / "classifiers" / r / "predictions.npz")["test_proba"] for r in runs}
  with np.load(tmp_path / "true" / "data" / "train.npz", allow_pickle=True) as z:
    assert "images" not in z and len(z["paths"]) == len(z["labels"])  # the split lists files, holds no pixels
  # Where a stream keeps its decoded images is not part of the data stage (changing it redoes nothing) and
  # reaches the training split the trainers stream from.
  disk = prepare_data.record(config)
  config.data.stream_cache = "off"
  assert prepare_data.record(config) == disk
  assert prepare_data.training_split(config, tmp_path / "true" / "data").images.stream_cache == "off"
  assert prepare_data.load_split(tmp_path / "true" / "data", "validation").images.stream_cache == "disk"
  assert sorted(probas["true"]) == sorted(probas["false"]) and len(probas["true"]) == 3
  for run, proba in probas["false"].items():
    np.testing.assert_allclose(probas["true"][run], proba, rtol=1e-5, atol=1e-6, err_msg=run)
  from deepsmote_jax.export import load_autoencoder

  models = [load_autoencoder(tmp_path / s / "autoencoder_reference" / "autoencoder")[0] for s in ("false", "true")]
  for a, b in zip(*(jax.tree.leaves(loop.split_model(m)[1:]) for m in models), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
