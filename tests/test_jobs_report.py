"""deepsmote_jax.jobs.report: seed-averaged bootstrap intervals over test images and the paired table."""

from __future__ import annotations

import numpy as np
import pytest

from deepsmote_jax import evaluation as E
from deepsmote_jax.jobs import report

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
