"""The report stage: every classifier run scored on the test split, the methods compared over seeds.

Writes `report.md` (comparison table mean ± std over seeds; bootstrap 95 % intervals over test images for the
seed-averaged numbers at the recall-first threshold; every method paired against the best baseline; the
paper's Table 1 layout per method, stage times, real-vs-synthetic grids), `report.json`, `summary.json` and
per-run metrics and figures.
"""

from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np

from deepsmote_jax import evaluation, files, visualize
from deepsmote_jax import metrics as M
from deepsmote_jax.jobs import prepare_data, stage, synthetic_report
from deepsmote_jax.jobs.generate import read_synthetic
from deepsmote_jax.jobs.train_classifier import BASELINES, evaluate_predictions

# Headline numbers: name -> path into an `evaluation.evaluate` result.
HEADLINE = {
  "accuracy": ("accuracy",),
  "acsa": ("acsa",),
  "g_mean": ("g_mean",),
  "macro_f1": ("macro_f1",),
  "ng_recall": ("binary", "recall"),
  "overkill_rate": ("binary", "overkill_rate"),
  "leak_rate": ("binary", "leak_rate"),
  "ng_recall_at_threshold": ("threshold", "test", "recall"),
  "overkill_at_threshold": ("threshold", "test", "overkill_rate"),
}


def _pick(result: dict, path: tuple[str, ...]) -> float:
  value = result
  for key in path:
    if not isinstance(value, dict) or key not in value:
      return float("nan")
    value = value[key]
  return float(value) if value is not None else float("nan")


def headline(results: list[dict]) -> dict:
  """Mean and spread over seeds of the numbers a quality engineer reads first."""
  out = {}
  for name, path in HEADLINE.items():
    vals = np.array([_pick(r, path) for r in results], float)
    finite = np.isfinite(vals)
    out[name] = {
      "mean": float(np.nanmean(vals)) if finite.any() else None,
      "std": float(np.nanstd(vals, ddof=1)) if finite.sum() > 1 else None,
    }
  return out


# Seed-averaged numbers given bootstrap intervals over test images, and the paired differences.
INTERVAL_KEYS = ("acsa", "ng_recall_at_threshold", "overkill_at_threshold")


def is_baseline(method: str) -> bool:
  """The methods DeepSMOTE is measured against: the imbalance baselines and any one-class `anomaly_*` one."""
  return method in BASELINES or method.startswith("anomaly_")


def per_image(predictions, result: dict) -> dict:
  """A run's test labels, argmax predictions and threshold flags (None without a threshold), as `evaluate`
  decided them (same score scale, same threshold)."""
  with np.load(predictions, allow_pickle=True) as z:
    labels, proba = np.asarray(z["test_labels"], np.int64), np.asarray(z["test_proba"], np.float64)
  pos = result.get("positive_class")
  p = None if pos is None else list(result["class_names"]).index(pos)
  t = result.get("threshold")
  flags = None
  if p is not None and t and t.get("test") is not None:
    flags = evaluation.decision_scores(proba, p, t["scale"]) >= t["value_score"]
  return {"labels": labels, "pred": proba.argmax(axis=1), "flags": flags, "positive": p}


def _rates(weights: np.ndarray, run: dict) -> dict[str, np.ndarray]:
  """(B,) ACSA and NG recall / overkill at the threshold of one run under each row of `weights`."""
  y, pred, flags, p = run["labels"], run["pred"], run["flags"], run["positive"]
  out = {"acsa": np.mean([M.bootstrap_rate(weights, y == c, pred == c) for c in np.unique(y)], axis=0)}
  nan = np.full(weights.shape[0], np.nan)
  out["ng_recall_at_threshold"] = nan if flags is None else M.bootstrap_rate(weights, y == p, flags)
  out["overkill_at_threshold"] = nan if flags is None else M.bootstrap_rate(weights, y != p, flags)
  return out


def _seed_mean(rows: list[np.ndarray]) -> np.ndarray:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all seeds NaN (no threshold): stays NaN
    return np.nanmean(np.stack(rows), axis=0)


def _summarise(point: np.ndarray, samples: np.ndarray, n_seeds: int) -> dict:
  """{mean, low, high, n_seeds} from a (1,) point value and (B,) bootstrap samples."""
  lo, hi = M.percentile_interval(samples, 0.95)
  mean = float(point[0])
  return {"mean": None if np.isnan(mean) else mean, "low": lo, "high": hi, "n_seeds": n_seeds}


def seed_intervals(runs: dict[str, dict[int, dict]], n_resamples: int, seed: int) -> dict:
  """Bootstrap 95 % intervals over test images of seed-averaged numbers, and each method paired against the
  best baseline (highest mean ACSA among `is_baseline` methods).

  `runs[method][seed]` is `per_image` of a run; every run must be on the same test images. The test images
  are resampled once (stratified by class, seeded) and the same resamples are applied to every seed's
  predictions, then averaged over seeds; a paired difference is method - best baseline on the same seed and
  the same resample, averaged over the seeds both have. Percentile intervals; the models and thresholds are
  held fixed (the seed-to-seed spread is the std of the headline table).
  """
  all_runs = [r for by_seed in runs.values() for r in by_seed.values()]
  labels = all_runs[0]["labels"]
  if any(not np.array_equal(r["labels"], labels) for r in all_runs):
    return {"note": "runs were scored on different test images: no intervals over test images"}
  weights = M.stratified_bootstrap_weights(labels, n_resamples, seed)
  ones = np.ones((1, labels.size), np.float32)  # the test set itself: point values by the same code
  boot, point = {}, {}
  for m, by_seed in runs.items():
    boot[m] = {s: _rates(weights, r) for s, r in by_seed.items()}
    point[m] = {s: _rates(ones, r) for s, r in by_seed.items()}
  summary = {
    m: {
      k: _summarise(
        _seed_mean([point[m][s][k] for s in by_seed]), _seed_mean([by_seed[s][k] for s in by_seed]), len(by_seed)
      )
      for k in INTERVAL_KEYS
    }
    for m, by_seed in boot.items()
  }
  return {
    "method": f"percentile bootstrap over test images, stratified by class, {n_resamples} resamples, seed {seed}; "
    "the same resamples for every seed and method",
    "level": 0.95,
    "methods": summary,
    "paired": _paired(summary, boot, point),
  }


def _paired(summary: dict, boot: dict, point: dict) -> dict:
  """Each method minus the best baseline, per seed on the same test resamples, averaged over shared seeds."""
  acsa = {m: s["acsa"]["mean"] for m, s in summary.items() if is_baseline(m) and s["acsa"]["mean"] is not None}
  if not acsa:
    return {"best_baseline": None, "note": "no baseline method among the runs", "methods": {}}
  best = max(acsa, key=acsa.get)  # the first listed wins an exact tie
  methods = {}
  for m in boot:
    seeds = sorted(set(boot[m]) & set(boot[best]))
    if m == best:
      continue
    if not seeds:
      methods[m] = {"seeds": [], "note": f"no seed shared with {best}"}
      continue

    def diff(src, k, m=m, seeds=seeds):
      return _seed_mean([src[m][s][k] - src[best][s][k] for s in seeds])

    methods[m] = {k: _summarise(diff(point, k), diff(boot, k), len(seeds)) for k in INTERVAL_KEYS}
    methods[m]["seeds"] = seeds
  rule = "highest mean ACSA over seeds among the baselines " + ", ".join(BASELINES) + " and anomaly_*"
  return {"best_baseline": best, "rule": rule, "best_baseline_acsa": acsa[best], "methods": methods}


def _synthetic_figures(config, work: pathlib.Path, out: pathlib.Path) -> dict[str, str]:
  """Real (left) beside synthetic (right) minority images, one figure per penalty and class."""
  figures = {}
  train = prepare_data.load_split(work / "data", "train")
  for p in config.pipeline.penalties:
    ds_dir = work / f"generate_{p}" / "dataset"
    if not ds_dir.is_dir():
      continue
    synth, labels = read_synthetic(ds_dir, train.class_names)
    for ci, cname in enumerate(train.class_names):
      s, real = synth[labels == ci][:8], train.images[train.labels == ci][:8]
      n = min(len(s), len(real))
      if n:
        figures[f"{p}_{cname}"] = str(
          visualize.side_by_side(real[:n], s[:n], out / f"real_vs_synthetic_{p}_{cname}.png")
        )
  return figures


def _cell(entry: dict | None, scale: float = 100.0, signed: bool = False) -> str:
  """'mean [low, high]' in % (or percentage points when signed)."""
  if not entry or entry.get("mean") is None:
    return "n/a"

  def show(x: float) -> str:
    v = round(scale * x, 2) + 0.0  # no '-0.00'
    return f"{v:+.2f}" if signed else f"{v:.2f}"

  lo, hi = entry["low"], entry["high"]
  return show(entry["mean"]) + ("" if np.isnan(lo) else f" [{show(lo)}, {show(hi)}]")


def interval_tables(intervals: dict | None) -> list[str]:
  """report.md sections: seed-averaged numbers with bootstrap 95 % intervals, and the paired table."""
  if not intervals:
    return []
  if "methods" not in intervals:
    return ["", f"No intervals over test images: {intervals.get('note')}.", ""]
  cols = "| ACSA (%) | NG recall @thr (%) | Overkill @thr (%) |"
  md = [
    "",
    "## Seed averages with 95 % intervals over test images",
    "",
    f"Mean over seeds [95 % interval]: {intervals['method']}, each resample averaged over seeds. The models and "
    "thresholds are held fixed: the table above gives the spread over seeds (std).",
    "",
    "| Method | Seeds " + cols,
    "|---|---:|---:|---:|---:|",
  ]
  for m, s in intervals["methods"].items():
    md.append(f"| {m} | {s['acsa']['n_seeds']} | " + " | ".join(_cell(s[k]) for k in INTERVAL_KEYS) + " |")
  paired = intervals["paired"]
  md += ["", "## Paired against the best baseline", ""]
  if paired["best_baseline"] is None:
    return md + [f"{paired['note']}.", ""]
  md += [
    f"Best baseline: **{paired['best_baseline']}** ({paired['rule']}; mean ACSA "
    f"{100 * paired['best_baseline_acsa']:.2f} %). Per seed, method - best baseline on the same seed and the same "
    "test images, in percentage points; mean over shared seeds [paired-bootstrap 95 % interval]. An interval "
    "that excludes 0 is a difference these test images resolve.",
    "",
    "| Method | Seeds | Δ ACSA (pp) | Δ NG recall @thr (pp) | Δ Overkill @thr (pp) |",
    "|---|---:|---:|---:|---:|",
  ]
  for m, d in paired["methods"].items():
    if not d["seeds"]:
      md.append(f"| {m} | 0 | {d['note']} | | |")
      continue
    md.append(f"| {m} | {len(d['seeds'])} | " + " | ".join(_cell(d[k], signed=True) for k in INTERVAL_KEYS) + " |")
  return md + [""]


def _markdown(
  config,
  work: pathlib.Path,
  results: dict,
  stage_times: dict,
  figures: dict,
  skipped: list,
  intervals: dict | None,
  synthetic: tuple[str, dict],
) -> str:
  train = prepare_data.load_split(work / "data", "train")
  test = prepare_data.load_split(work / "data", "test")
  md = [
    f"# DeepSMOTE comparison: {config.classifier.name} on {config.data.source} "
    f"{config.data.get('root') or ''}".rstrip(),
    "",
    f"Seeds: {list(config.pipeline.seeds)}; test set: {test.counts()}; "
    f"training set (before oversampling): {train.counts()}.",
    "",
  ]
  synthetic_md, synthetic_json = synthetic
  if synthetic_json.get("collapsed"):
    md += [f"**Synthetic set collapsed or near-constant: {synthetic_json['collapsed']}** (see Synthetic images).", ""]
  if skipped:
    shown = "; ".join(f"{s['file']} ({s['reason']})" for s in skipped[:5])
    md += [
      f"**{len(skipped)} input file(s) skipped** (`data.on_error='skip'`, listed in data/skipped.json): "
      f"{shown}{' ...' if len(skipped) > 5 else ''}",
      "",
    ]
  pl = config.pipeline
  md += [
    f"Best epoch by validation `{config.classifier.select_metric}` (exact ties broken by validation log-likelihood). "
    f"Recall-first threshold (@thr): rule `{pl.threshold_rule}` on the validation split, target NG recall "
    f"{100 * float(pl.target_recall):g} %, confidence {100 * float(pl.threshold_confidence):g} % (the rule and "
    "its guarantee are stated in each run's report).",
    "",
    evaluation.compare_table(results),
    *interval_tables(intervals),
    "",
    synthetic_md,
    "",
    "## Stage wall times (s)",
    "",
    "| stage | seconds |",
    "|---|---|",
  ] + [f"| {k} | {v:.1f} |" for k, v in stage_times.items()]
  md += ["", "## Confusion tables (first seed of each method)", ""]
  for method, rs in results.items():
    md += [f"### {method}", "", evaluation.report_markdown(rs[0]), ""]
  if figures:
    md += ["## Real (left) vs synthetic (right) minority images", ""]
    md += [f"![{k}]({pathlib.Path(v).name})" for k, v in figures.items()]
  return "\n".join(md)


def run(config, work: pathlib.Path, out: pathlib.Path, stage_names: list[str]) -> dict:
  """Scores every run in `<work>/classifiers` and writes the comparison; returns the stage info."""
  runs = json.loads((work / "classifiers" / "runs.json").read_text())
  results: dict[str, list] = {}
  per_run = {}
  images: dict[str, dict[int, dict]] = {}
  for run_name, info in runs.items():
    predictions = work / "classifiers" / run_name / "predictions.npz"
    r = evaluate_predictions(
      config, predictions, out / run_name, f"{config.classifier.name}, {info['method']}, seed {info['seed']}"
    )
    per_run[run_name] = r
    results.setdefault(info["method"], []).append(r)
    images.setdefault(info["method"], {})[int(info["seed"])] = per_image(predictions, r)
  n_boot = int(config.pipeline.bootstrap)
  intervals = seed_intervals(images, n_boot, int(config.pipeline.bootstrap_seed)) if n_boot and images else None
  stage_times = {
    n: json.loads((work / n / stage.DONE).read_text())["wall_s"] for n in stage_names if stage.is_done(work / n)
  }
  figures = _synthetic_figures(config, work, out)
  skipped_file = work / "data" / "skipped.json"
  skipped = json.loads(skipped_file.read_text()) if skipped_file.is_file() else []
  synthetic = synthetic_report.run(config, work, out)
  md = _markdown(config, work, results, stage_times, figures, skipped, intervals, synthetic)
  files.atomic_write_text(out / "report.md", md)
  summary = {
    "methods": {m: headline(rs) for m, rs in results.items()},
    "intervals": intervals,
    "stage_wall_s": stage_times,
    "runs": list(per_run),
    "figures": figures,
    "skipped_inputs": len(skipped),
    "synthetic": synthetic[1],
  }
  files.atomic_write_json(out / "report.json", {"summary": summary, "runs": per_run})
  files.atomic_write_json(out / "summary.json", summary)
  return {"methods": list(results)}
