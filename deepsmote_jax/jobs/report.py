"""The report stage: every classifier run scored on the test split, the methods compared over seeds.

Writes `report.md` (comparison table mean ± std, the paper's Table 1 layout per method, stage times,
real-vs-synthetic grids), `report.json`, `summary.json` and per-run metrics and figures.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from deepsmote_jax import evaluation, files, visualize
from deepsmote_jax.jobs import prepare_data, stage
from deepsmote_jax.jobs.generate import read_synthetic
from deepsmote_jax.jobs.train_classifier import evaluate_predictions

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


def _markdown(config, work: pathlib.Path, results: dict, stage_times: dict, figures: dict, skipped: list) -> str:
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
  if skipped:
    shown = "; ".join(f"{s['file']} ({s['reason']})" for s in skipped[:5])
    md += [
      f"**{len(skipped)} input file(s) skipped** (`data.on_error='skip'`, listed in data/skipped.json): "
      f"{shown}{' ...' if len(skipped) > 5 else ''}",
      "",
    ]
  md += [
    f"Recall-first threshold: chosen on the validation split for NG recall >= {config.pipeline.target_recall}.",
    "",
    evaluation.compare_table(results),
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
  for run_name, info in runs.items():
    r = evaluate_predictions(
      config,
      work / "classifiers" / run_name / "predictions.npz",
      out / run_name,
      f"{config.classifier.name}, {info['method']}, seed {info['seed']}",
    )
    per_run[run_name] = r
    results.setdefault(info["method"], []).append(r)
  stage_times = {
    n: json.loads((work / n / stage.DONE).read_text())["wall_s"] for n in stage_names if stage.is_done(work / n)
  }
  figures = _synthetic_figures(config, work, out)
  skipped_file = work / "data" / "skipped.json"
  skipped = json.loads(skipped_file.read_text()) if skipped_file.is_file() else []
  files.atomic_write_text(out / "report.md", _markdown(config, work, results, stage_times, figures, skipped))
  summary = {
    "methods": {m: headline(rs) for m, rs in results.items()},
    "stage_wall_s": stage_times,
    "runs": list(per_run),
    "figures": figures,
    "skipped_inputs": len(skipped),
  }
  files.atomic_write_json(out / "report.json", {"summary": summary, "runs": per_run})
  files.atomic_write_json(out / "summary.json", summary)
  return {"methods": list(results)}
