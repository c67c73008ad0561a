"""deepsmote_jax.jobs.report: seed-averaged bootstrap intervals over test images and the paired table."""

from __future__ import annotations

import base64
import csv
import json
import re

import numpy as np
import pytest

from deepsmote_jax import evaluation as E
from deepsmote_jax.jobs import report

# One xdist worker runs this module (`--dist loadgroup`), so its module-scoped fixture is built once.
pytestmark = pytest.mark.xdist_group("jobs_report")

# 40 OK then 20 NG test images; class 1 (NG) is the positive class.
LABELS = np.r_[np.zeros(40, int), np.ones(20, int)]


def _run(acsa_ok: float, acsa_ng: float, seed: int, flag_ok: float = 0.1, flag_ng: float = 0.9) -> dict:
  """A hand-made run: the share of each class recognised by argmax, and of each flagged at the threshold."""
  rng = np.random.default_rng(seed)
  pred = np.where(LABELS == 0, rng.random(60) >= acsa_ok, rng.random(60) < acsa_ng).astype(int)
  flags = np.where(LABELS == 0, rng.random(60) < flag_ok, rng.random(60) < flag_ng)
  return {"labels": LABELS, "pred": pred, "flags": flags, "positive": 1}


def _point(run: dict) -> dict:
  y, pred, flags = run["labels"], run["pred"], run["flags"]
  return {
    "acsa": np.mean([np.mean(pred[y == c] == c) for c in (0, 1)]),
    "ng_recall_at_threshold": np.mean(flags[y == 1]),
    "overkill_at_threshold": np.mean(flags[y == 0]),
  }


def _results() -> dict:
  quality = {  # method -> (OK recall, NG recall) of its argmax decision
    "none": (0.9, 0.3),
    "class_weights": (0.85, 0.75),
    "random_oversampling": (0.8, 0.6),
    "smote_pixels": (0.85, 0.55),
    "deepsmote_reference": (0.9, 0.8),  # best overall, but not a baseline
  }
  return {m: {s: _run(*q, seed=10 * i + s) for s in (0, 1, 2)} for i, (m, q) in enumerate(quality.items())}


def test_rule_table_lists_every_rule_per_method_with_the_spread_over_seeds():
  def result(test_recall):
    rows = {"val_overkill": 0.2, "test_recall": test_recall, "test_overkill": 0.1}
    return {"threshold_rules": {"tolerance": {**rows, "test_overkill": 0.9}, "min_ng": rows}}

  md = report.rule_table({"none": [result(0.5), result(1.0)], "deepsmote_reference": [result(0.75)]}, "NG", "OK")
  assert "## Operating points of every threshold rule" in md
  assert "| none | tolerance | 20.0 ± 0.0 | 75.0 ± 35.4 | 90.0 ± 0.0 |" in md
  assert "| none | min_ng | 20.0 ± 0.0 | 75.0 ± 35.4 | 10.0 ± 0.0 |" in md
  assert "| deepsmote_reference | min_ng | 20.0 | 75.0 | 10.0 |" in md
  assert report.rule_table({"none": [{"threshold_rules": None}]}, "NG", "OK") == []  # no validation threshold


def test_paired_table_picks_the_best_baseline_and_pairs_by_seed():
  runs = _results()
  out = report.seed_intervals(runs, n_resamples=300, seed=0)
  paired = out["paired"]
  acsa = {m: np.mean([_point(r)["acsa"] for r in by_seed.values()]) for m, by_seed in runs.items()}
  best = max((m for m in acsa if m != "deepsmote_reference"), key=acsa.get)
  assert paired["best_baseline"] == best and paired["best_baseline_acsa"] == pytest.approx(acsa[best])
  assert set(paired["methods"]) == set(runs) - {best}
  d = paired["methods"]["deepsmote_reference"]
  for key in report.INTERVAL_KEYS:
    diffs = [_point(runs["deepsmote_reference"][s])[key] - _point(runs[best][s])[key] for s in (0, 1, 2)]
    assert d[key]["mean"] == pytest.approx(np.mean(diffs)) and d[key]["n_seeds"] == 3
    assert d[key]["low"] <= d[key]["mean"] <= d[key]["high"]
  # Seed averages: the mean is the headline mean, the interval is around it, the same draw gives the same numbers.
  m = out["methods"]["none"]["ng_recall_at_threshold"]
  assert m["mean"] == pytest.approx(np.mean([_point(r)["ng_recall_at_threshold"] for r in runs["none"].values()]))
  assert m["low"] <= m["mean"] <= m["high"] and m["high"] - m["low"] > 0.05
  assert report.seed_intervals(runs, n_resamples=300, seed=0) == out
  # A one-class (anomaly_*) method is a baseline too; a method without a shared seed is listed, not paired.
  runs["anomaly_ae"] = {s: _run(0.95, 0.9, seed=100 + s) for s in (0, 1)}
  runs["deepsmote_paper"] = {7: _run(0.9, 0.8, seed=7)}
  again = report.seed_intervals(runs, n_resamples=100, seed=0)["paired"]
  assert again["best_baseline"] == "anomaly_ae"
  assert again["methods"]["deepsmote_reference"]["acsa"]["n_seeds"] == 2
  assert (
    again["methods"]["deepsmote_paper"]["seeds"] == []
    and "no seed shared" in again["methods"]["deepsmote_paper"]["note"]
  )
  md = "\n".join(report.interval_tables(report.seed_intervals(runs, n_resamples=100, seed=0)))
  assert "Best baseline: **anomaly_ae**" in md and "| deepsmote_reference | 2 |" in md
  assert "## Seed averages with 95 % intervals over test images" in md


def test_per_image_matches_what_evaluate_decided(tmp_path):
  rng = np.random.default_rng(3)
  names = ["OK", "NG"]

  def proba(y):
    logits = rng.normal(size=(y.size, 2)) + 1.2 * np.eye(2)[y]
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

  val_y = np.r_[np.zeros(30, int), np.ones(8, int)]
  test_p, val_p = proba(LABELS), proba(val_y)
  path = tmp_path / "predictions.npz"
  np.savez(path, test_proba=test_p, test_labels=LABELS, val_proba=val_p, val_labels=val_y, class_names=names)
  result = E.evaluate(LABELS, test_p, names, val_true=val_y, val_scores=val_p, threshold_rule="min_ng", bootstrap=0)
  run = report.per_image(path, result)
  t = result["threshold"]["test"]
  assert int(run["flags"][LABELS == 1].sum()) == t["tp"] and int(run["flags"][LABELS == 0].sum()) == t["fp"]
  np.testing.assert_array_equal(run["pred"], test_p.argmax(1))
  single = report.seed_intervals({"none": {0: run}}, n_resamples=50, seed=0)
  assert single["methods"]["none"]["overkill_at_threshold"]["mean"] == pytest.approx(t["overkill_rate"])
  assert single["paired"]["methods"] == {} and single["paired"]["best_baseline"] == "none"


def test_runs_on_different_test_images_get_no_intervals():
  a = _run(0.9, 0.5, seed=0)
  b = dict(_run(0.9, 0.5, seed=1), labels=LABELS[::-1])
  out = report.seed_intervals({"none": {0: a}, "class_weights": {0: b}}, n_resamples=10, seed=0)
  assert "different test images" in out["note"] and "No intervals" in report.interval_tables(out)[1]


# ----------------------------------------------------------------------------------------------------
# The report's files after one tiny pipeline run (shared by the tests below).


def test_count_cell_one_and_several_seeds():
  assert report.count_cell([[22, 23]]) == "22/23 (95.7 %)"
  assert report.count_cell([[0, 0]]) == "0/0 (n/a)"
  several = report.count_cell([[22, 23], [20, 23], [23, 23]])
  rates = np.array([22, 20, 23]) / 23
  assert several == f"21.7/23 ({100 * rates.mean():.1f} ± {100 * rates.std(ddof=1):.1f} %)"
  assert report.count_cell([]) == "n/a"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One small pipeline run: the `none` baseline and DeepSMOTE, one seed."""
  from test_jobs_pipeline import _write_images, tiny_config

  from deepsmote_jax.jobs.pipeline import run_pipeline

  tmp = tmp_path_factory.mktemp("report")
  config = tiny_config(_write_images(tmp / "images"))
  config.pipeline.methods = ("none", "deepsmote")
  work = tmp / "run"
  summary = run_pipeline(config, work, progress=False)
  return config, work, summary


def _csv_rows(work, run):
  with (work / "classifiers" / run / "predictions.csv").open() as f:
    return [r for r in csv.DictReader(f) if r["split"] == "test"]


def _headline_row(md: str, method: str) -> list[str]:
  section = md.split("## Headline", 1)[1].split("\n## ", 1)[0]
  rows = [line for line in section.splitlines() if line.startswith(f"| {method} |")]
  assert len(rows) == 1, rows
  return [c.strip() for c in rows[0].strip("|").split("|")]


@pytest.mark.slow
def test_report_files_and_headline_counts_agree_with_predictions(tiny_run):
  config, work, summary = tiny_run
  out = work / "report"
  runs = json.loads((work / "classifiers" / "runs.json").read_text())
  assert list(runs) == ["none_seed0", "deepsmote_reference_seed0"]
  for name in ("report.md", "report.html", "report.json", "summary.json", "curves_autoencoder_reference.png"):
    assert (out / name).is_file(), name
  for run in runs:
    assert (out / f"curves_{run}.png").is_file(), run
  assert (out / "triplets_reference_NG.png").is_file() and not list(out.glob("real_vs_synthetic_*"))
  md = (out / "report.md").read_text()
  # Heading levels: one title, then sections and subsections; the details come last, in the appendix.
  headings = [line for line in md.splitlines() if line.startswith("#")]
  assert [h for h in headings if h.startswith("# ")] == [headings[0]]
  assert all(h.split(" ", 1)[0] in ("#", "##", "###") for h in headings)
  assert headings[1].startswith("## Headline") and "## Appendix" in headings
  assert headings[2] == "## Operating points of every threshold rule"
  saved_rules = json.loads((out / "report.json").read_text())["runs"]["none_seed0"]["threshold_rules"]
  assert set(saved_rules) == {"tolerance", "min_ng", "val_quantile"}
  appendix = md.index("## Appendix")
  assert md.index("Table 1 layout") > appendix and md.index("### Stage wall times") > appendix
  saved = json.loads((out / "report.json").read_text())["runs"]
  for run, info in runs.items():
    rows = _csv_rows(work, run)
    ng, ok = [r for r in rows if r["actual"] == "NG"], [r for r in rows if r["actual"] != "NG"]
    cells = _headline_row(md, info["method"])
    assert cells[1] == "1"  # seeds

    def cell(k, n):
      return f"{k}/{n} ({100 * k / n:.1f} %)" if n else f"{k}/{n} (n/a)"

    for offset, flagged in ((2, lambda r: r["argmax"] == "NG"), (5, lambda r: r["NG_at_threshold"] == "True")):
      passed = [r for r in rows if not flagged(r)]
      missed = sum(r["actual"] == "NG" for r in passed)
      assert cells[offset] == cell(sum(map(flagged, ng)), len(ng))  # NG recall
      assert cells[offset + 1] == cell(sum(map(flagged, ok)), len(ok))  # overkill
      assert cells[offset + 2] == cell(missed, len(passed))  # leak
    r = saved[run]
    assert cells[2] == cell(r["binary"]["tp"], r["binary"]["tp"] + r["binary"]["fn"])
    assert cells[8] == f"{100 * r['acsa']:.1f}" and cells[9] == f"{100 * r['roc_auc']:.1f}"
  assert summary["counts"]["none"][0]["argmax"]["ng_recall"][1] == sum(r["actual"] == "NG" for r in rows)


@pytest.mark.slow
def test_galleries_list_exactly_the_wrong_images(tiny_run):
  config, work, summary = tiny_run
  out = work / "report"
  md = (out / "report.md").read_text()
  for method, g in summary["galleries"].items():
    rows = _csv_rows(work, g["run"])
    assert g["decision"] == "threshold"  # the runs have a recall-first threshold
    missed = [r["file"] for r in rows if r["actual"] == "NG" and r["NG_at_threshold"] != "True"]
    overkill = [r["file"] for r in rows if r["actual"] != "NG" and r["NG_at_threshold"] == "True"]
    for kind, label, expected in (("missed", "missed_NG", missed), ("overkill", "overkill_OK", overkill)):
      entry, path = g[kind], out / f"gallery_{method}_{label}.png"
      assert entry["files"] == expected and entry["count"] == len(expected)
      assert path.is_file() == bool(expected), path
      if expected:
        assert entry["shown"] == min(len(expected), 24) and not entry["not_found"]
        assert f"]({path.name})" in md
      else:
        assert f"{'Missed NG' if kind == 'missed' else 'Overkill OK'} (threshold, {g['run']}): none." in md


@pytest.mark.slow
def test_report_html_is_self_contained(tiny_run):
  _, work, _ = tiny_run
  page = (work / "report" / "report.html").read_text()
  assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<table>" in page
  assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
  sources = re.findall(r'src="([^"]*)"', page)
  assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
  for png in ("curves_none_seed0.png", "triplets_reference_NG.png"):
    data = base64.b64encode((work / "report" / png).read_bytes()).decode()
    assert data in page, png
  assert "NG recall @thr" in page and "none_seed0/report.md" in page


@pytest.mark.slow
def test_tensorboard_events_hold_the_logged_scalars(tiny_run):
  _, work, summary = tiny_run
  tf = pytest.importorskip("tensorflow", reason="TensorBoard event files need the `data` extra")
  if summary.get("tensorboard_note"):
    pytest.skip(f"TensorBoard not written here: {summary['tensorboard_note']}")
  from deepsmote_jax.jobs import curves

  for run, jsonl in (
    ("none_seed0", work / "classifiers" / "none_seed0" / "metrics.jsonl"),
    ("autoencoder_reference", work / "autoencoder_reference" / "metrics.jsonl"),
  ):
    events = list((work / "tensorboard" / run).glob("events.out.tfevents.*"))
    assert len(events) == 1, run
    logged = {}
    for event in tf.compat.v1.train.summary_iterator(str(events[0])):
      for v in event.summary.value:
        logged[(v.tag, event.step)] = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
    expected = {
      (k, int(s)): v
      for k, (steps, values) in curves.scalars(curves.read_jsonl(jsonl)).items()
      for s, v in zip(steps, values)
    }
    assert set(logged) == set(expected), run
    for key, v in expected.items():
      assert logged[key] == pytest.approx(v, rel=1e-6), key
  assert {"loss", "recon", "penalty", "val_psnr"} <= {t for t, _ in logged}


@pytest.mark.slow
def test_run_info_is_written_at_start(tiny_run):
  config, work, _ = tiny_run
  info = json.loads((work / "run_info.json").read_text())
  assert set(info) == {"started", "config", "versions", "devices", "git_commit"}
  assert info["config"]["pipeline"]["methods"] == ["none", "deepsmote"]
  for name in ("deepsmote_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
    assert info["versions"][name], name
  assert info["devices"]["count"] >= 1 and info["devices"]["kind"]
  assert info["git_commit"] is None or len(info["git_commit"]) == 40
  # Not part of any stage's record: a rerun with the same config reuses every stage.
  for name in ("data", "classifiers"):
    assert "run_info" not in (work / name / "DONE.json").read_text()
