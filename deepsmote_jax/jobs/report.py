"""The report stage: every classifier run scored on the test split, the methods compared over seeds.

Writes into `<work>/report/`:

* `report.md` -- the headline table (per method: NG recall, overkill and leak as counts and % at the argmax
  decision and at the recall-first threshold, mean ± std over seeds, ACSA and ROC AUC beside them), bootstrap
  95 % intervals over test images and every method paired against the best baseline, the galleries of
  misclassified test images, the training curves, the synthetic-image section with labelled triplets, and an
  appendix (the paper's Table 1 layout, the full metric table, stage times, links to the per-run reports);
* `report.html` -- the same as one self-contained page (images embedded);
* `gallery_<method>_missed_<NG>.png`, `gallery_<method>_overkill_<OK>.png` (first seed of each method; not
  written when empty), `curves_<run>.png`, `curves_autoencoder_<penalty>.png`,
  `triplets_<penalty>_<class>.png` (`galleries.py`, `curves.py`);
* `report.json`, `summary.json` and per-run metrics, report.md and figures in `<run>/`.

The training logs are also replayed into TensorBoard event files under `<work>/tensorboard/<run>/`
(`curves.replay_tensorboard`; metrics.jsonl stays the source of truth).
"""

from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np

from deepsmote_jax import evaluation, files
from deepsmote_jax import metrics as M
from deepsmote_jax.jobs import curves, galleries, prepare_data, report_html, run_info, stage, synthetic_report
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


# ----------------------------------------------------------------------------------------------------
# Headline table: counts and % of the numbers an inspection line acts on

COUNT_KEYS = ("ng_recall", "overkill", "leak")  # (numerator, denominator) of each, per decision


def decision_counts(result: dict) -> dict | None:
  """{'argmax': {...}, 'threshold': {...} or None} with [k, n] per COUNT_KEYS of one run (NG recall = actual
  NG flagged NG, overkill = actual non-NG flagged NG, leak = passed as non-NG but actually NG); None without
  a positive class."""
  b = result.get("binary")
  if not b:
    return None

  def counts(r: dict) -> dict:
    tp, fn, fp, tn = (int(r[k]) for k in ("tp", "fn", "fp", "tn"))
    return {"ng_recall": [tp, tp + fn], "overkill": [fp, fp + tn], "leak": [fn, fn + tn]}

  t = result.get("threshold")
  return {"argmax": counts(b), "threshold": counts(t["test"]) if t and t.get("test") else None}


def count_cell(pairs: list[list[int]]) -> str:
  """'22/23 (95.7 %)' for one seed; over several seeds the mean count over the (shared) denominator and the
  mean ± sample std of the per-seed percentages, e.g. '21.7/23 (94.2 ± 2.5 %)'."""
  if not pairs:
    return "n/a"
  ks, ns = np.array([k for k, _ in pairs], float), np.array([n for _, n in pairs], float)
  rates = np.divide(ks, ns, out=np.full_like(ks, np.nan), where=ns > 0)
  finite = rates[np.isfinite(rates)]
  if len(pairs) == 1:
    k, n = pairs[0]
    return f"{k}/{n} ({100 * k / n:.1f} %)" if n else f"{k}/{n} (n/a)"
  den = f"{int(ns[0])}" if np.all(ns == ns[0]) else f"{ns.mean():.1f}"
  if not finite.size:
    return f"{ks.mean():.1f}/{den} (n/a)"
  spread = f" ± {100 * finite.std(ddof=1):.1f}" if finite.size > 1 else ""
  return f"{ks.mean():.1f}/{den} ({100 * finite.mean():.1f}{spread} %)"


def _mean_std(values: list) -> str:
  vals = np.array([np.nan if v is None else v for v in values], float)
  finite = vals[np.isfinite(vals)]
  if not finite.size:
    return "n/a"
  return f"{100 * finite.mean():.1f}" + (f" ± {100 * finite.std(ddof=1):.1f}" if finite.size > 1 else "")


def headline_table(results: dict[str, list[dict]], positive: str | None) -> list[str]:
  """The report's first table: one row per method."""
  pos = positive or "positive"
  decisions = (("argmax", ""), ("threshold", " @thr"))
  head = (
    "| Method | Seeds | "
    + " | ".join(f"{pos} recall{s} | Overkill{s} | Leak{s}" for _, s in decisions)
    + " | ACSA (%) | ROC AUC (%) |"
  )
  md = [head, "|---|---:|" + "---:|" * 8]
  for method, rs in results.items():
    counts = [decision_counts(r) for r in rs]
    cells = []
    for d, _ in decisions:
      for k in COUNT_KEYS:
        cells.append(count_cell([c[d][k] for c in counts if c and c[d]]))
    acsa, auc = _mean_std([r.get("acsa") for r in rs]), _mean_std([r.get("roc_auc") for r in rs])
    md.append(f"| {method} | {len(rs)} | " + " | ".join(cells) + f" | {acsa} | {auc} |")
  return md


def rule_table(results: dict[str, list[dict]], positive: str, negative: str) -> list[str]:
  """Every threshold rule side by side (`evaluation.rule_operating_points`): what each, chosen on validation,
  did on the test set, so the recall / overkill trade-off is on the page whichever rule the config names."""
  if not any(r.get("threshold_rules") for rs in results.values() for r in rs):
    return []
  md = [
    "",
    "## Operating points of every threshold rule",
    "",
    f"Each rule's threshold chosen on the validation split, applied to the test set (mean ± std over seeds, %). "
    f"`tolerance`: normal tolerance bound on the validation {positive} logits (recall >= target with the stated "
    f"confidence if they are normal); `min_ng`: the lowest validation {positive} score (distribution-free: a new "
    f"{positive} falls below it with probability 1/(n+1)); `val_quantile`: the highest threshold meeting the "
    "target recall on validation (no guarantee).",
    "",
    f"| Method | Rule | Validation overkill | Test {positive} recall | Test overkill ({negative} flagged) |",
    "|---|---|---:|---:|---:|",
  ]
  for method, rs in results.items():
    rules = [r["threshold_rules"] for r in rs if r.get("threshold_rules")]
    for rule in rules[0] if rules else ():
      cells = [_mean_std([r[rule][k] for r in rules]) for k in ("val_overkill", "test_recall", "test_overkill")]
      md.append(f"| {method} | {rule} | " + " | ".join(cells) + " |")
  return md


# ----------------------------------------------------------------------------------------------------
# Report sections


def _neg_name(class_names: list[str], positive: str) -> str:
  rest = [c for c in class_names if c != positive]
  return rest[0] if len(rest) == 1 else "rest"


def write_galleries(config, work: pathlib.Path, out: pathlib.Path, runs: dict, results: dict) -> dict:
  """The first seed of each method: its missed-NG and overkill test images (threshold, else argmax)."""
  first = {}
  for run_name, info in runs.items():
    first.setdefault(info["method"], run_name)
  lookup = galleries.ImageLookup(work, "test", (config.data.get("root") or "", config.data.get("test_root") or ""))
  out_info = {}
  for method, run_name in first.items():
    r = results[method][0]
    pos = r.get("positive_class")
    csv_path = work / "classifiers" / run_name / "predictions.csv"
    if pos is None or not csv_path.is_file():
      why = "no positive class" if pos is None else "no predictions.csv"
      out_info[method] = {"run": run_name, "note": why}
      continue
    neg = _neg_name(r["class_names"], pos)
    wrong = galleries.wrong_images(galleries.read_predictions(csv_path), pos)
    entry = {"run": run_name, "decision": wrong["decision"], "positive": pos, "negative": neg}
    for kind, files_, label, total in (
      ("missed", wrong["missed"], f"missed_{pos}", wrong["n_positive"]),
      ("overkill", wrong["overkill"], f"overkill_{neg}", wrong["n_negative"]),
    ):
      title = f"{run_name}: {label.replace('_', ' ')} at the {wrong['decision']} ({len(files_)} of {total})"
      g = galleries.write_gallery(files_, lookup, out / f"gallery_{method}_{label}.png", title)
      entry[kind] = dict(g, label=label, of=total)
    out_info[method] = entry
  return out_info


def galleries_md(info: dict) -> list[str]:
  if not info:
    return []
  intro = (
    "First seed of each method, at the recall-first threshold (at the argmax where the run has no threshold); "
    "captions are the test files (`classifiers/<run>/predictions.csv` lists every image's scores)."
  )
  md = ["## Misclassified test images", "", intro, ""]
  for method, e in info.items():
    md += [f"### {method}", ""]
    if "note" in e:
      md += [f"No gallery: {e['note']}.", ""]
      continue
    for kind in ("missed", "overkill"):
      g = e[kind]
      what = f"{'Missed' if kind == 'missed' else 'Overkill'} {g['label'].split('_', 1)[1]}"
      if not g["count"]:
        md += [f"{what} ({e['decision']}, {e['run']}): none.", ""]
        continue
      name = pathlib.Path(g["path"]).name if g["path"] else None
      shown = f", first {g['shown']} shown" if g["shown"] < g["count"] else ""
      link = f" [{name}]({name})" if name else " (images not found in the saved test split)"
      md += [f"{what} ({e['decision']}, {e['run']}): {g['count']} of {g['of']}{shown}:{link}", ""]
      if name:
        md += [f"![{what}, {method}]({name})", ""]
  return md


def write_curves(config, work: pathlib.Path, out: pathlib.Path, runs: dict) -> dict:
  """curves_<run>.png and curves_autoencoder_<penalty>.png, and the TensorBoard replay of the same logs."""
  logs = {}
  if "deepsmote" in config.pipeline.methods:
    for p in config.pipeline.penalties:
      logs[f"autoencoder_{p}"] = (work / f"autoencoder_{p}" / "metrics.jsonl", f"autoencoder ({p} penalty)")
  for run_name in runs:
    logs[run_name] = (work / "classifiers" / run_name / "metrics.jsonl", f"classifier {run_name}")
  plots, board, note = {}, {}, None
  for name, (jsonl, title) in logs.items():
    if not jsonl.is_file():
      continue
    plotted = curves.plot_file(jsonl, out / f"curves_{name}.png", title)
    if plotted:
      plots[name] = plotted
    if note is None:
      try:
        board[name] = curves.replay_tensorboard(curves.read_jsonl(jsonl), work / "tensorboard" / name)
      except curves.TensorBoardUnavailable as e:
        note = f"not written: {e}"
  return {"plots": plots, "tensorboard": board, "tensorboard_note": note}


def curves_md(info: dict, work: pathlib.Path, first_runs: set[str]) -> list[str]:
  plots = info["plots"]
  if not plots:
    return []
  md = ["## Training curves", "", "From each run's `metrics.jsonl`; the dashed line is the exported (best) step.", ""]
  for name, p in plots.items():
    if name.startswith("autoencoder_"):
      md += [f"![{name}]({pathlib.Path(p['path']).name})", ""]
  md += ["| Run | Best step | Curves |", "|---|---:|---|"]
  for name, p in plots.items():
    if not name.startswith("autoencoder_"):
      f = pathlib.Path(p["path"]).name
      md.append(f"| {name} | {'n/a' if p['best_step'] is None else p['best_step']} | [{f}]({f}) |")
  md.append("")
  for name, p in plots.items():
    if name in first_runs:
      md += [f"![{name}]({pathlib.Path(p['path']).name})", ""]
  if info["tensorboard"]:
    md += [f"TensorBoard (the same scalars): `tensorboard --logdir {work / 'tensorboard'}`.", ""]
  elif info["tensorboard_note"]:
    md += [f"TensorBoard event files {info['tensorboard_note']}.", ""]
  return md


def write_triplets(config, work: pathlib.Path, out: pathlib.Path) -> dict[str, str]:
  """triplets_<penalty>_<class>.png: base | synthetic | neighbour rows from each generated manifest."""
  figures: dict[str, str] = {}
  if "deepsmote" not in config.pipeline.methods:
    return figures
  lookup = None
  for p in config.pipeline.penalties:
    ds_dir = work / f"generate_{p}" / "dataset"
    if not (ds_dir / "manifest.csv").is_file():
      continue
    lookup = lookup or galleries.train_lookup(work)
    for cname, path in galleries.write_triplets(ds_dir, lookup, out, p).items():
      figures[f"{p}_{cname}"] = path
  return figures


def triplets_md(figures: dict[str, str]) -> list[str]:
  if not figures:
    return []
  md = [
    "### Labelled triplets",
    "",
    "Each row: a real training image (base), the synthetic image DeepSMOTE decoded between it and one of its "
    "nearest neighbours in latent space, and that neighbour; captions are the files (generate's manifest.csv).",
    "",
  ]
  for key, path in figures.items():
    md += [f"![triplets {key}]({pathlib.Path(path).name})", ""]
  return md


def appendix_md(results: dict, stage_times: dict, runs: dict) -> list[str]:
  md = ["## Appendix", ""]
  first = {m: rs[0] for m, rs in results.items()}
  names = next(iter(first.values()))["class_names"]
  pos = next(iter(first.values())).get("positive_class")
  if len(names) == 2 and pos is not None:
    ng = names.index(pos)
    md += [
      "### Table 1 layout (AMOLED paper), first seed of each method",
      "",
      "Argmax decision:",
      "",
      evaluation.paper_layout_table({m: r["confusion_matrix"] for m, r in first.items()}, names, ng),
    ]
    at_thr = {m: r["threshold"]["confusion_matrix"] for m, r in first.items() if (r.get("threshold") or {}).get("test")}
    if at_thr:
      md += ["At the recall-first threshold:", "", evaluation.paper_layout_table(at_thr, names, ng, False)]
  else:
    md += ["### Confusion matrices, first seed of each method", "", "Rows: actual class; columns: predicted.", ""]
    for m, r in first.items():
      cm = np.asarray(r["confusion_matrix"])
      md += [f"{m}:", "", "| Actual \\ Predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
      md += [f"| {names[i]} | " + " | ".join(str(v) for v in cm[i]) + " |" for i in range(len(names))] + [""]
  md += [
    "### All metrics",
    "",
    evaluation.compare_table(results),
    "### Stage wall times (s)",
    "",
    "| Stage | Seconds |",
    "|---|---:|",
  ]
  md += [f"| {k} | {v:.1f} |" for k, v in stage_times.items()]
  md += ["", "### Per-run reports", "", "Confusion tables, threshold rule and guarantee, intervals and notes:", ""]
  md += [f"- [{r}]({r}/report.md)" for r in runs]
  md += ["", f"Run information (config, versions, devices, commit): [{run_info.RUN_INFO}](../{run_info.RUN_INFO})."]
  return md + [""]


def _split_counts(config, work: pathlib.Path, name: str) -> str:
  """A split's class counts as the tables count it: images, and with tiling the tiles beside them."""
  if prepare_data.tile_settings(config).mode == "none":
    return str(prepare_data.load_split(work / "data", name).counts())
  split = prepare_data.load_tiled_split(work / "data", name)
  return f"{split.image_counts()} images ({split.tiles.counts()} tiles)"


def _markdown(config, work: pathlib.Path, results: dict, parts: dict) -> str:
  pl = config.pipeline
  test, train = _split_counts(config, work, "test"), _split_counts(config, work, "train")
  md = [
    f"# DeepSMOTE comparison: {config.classifier.name} on {config.data.source} "
    f"{config.data.get('root') or ''}".rstrip(),
    "",
    f"Seeds: {list(pl.seeds)}; test set: {test}; training set (before oversampling): {train}.",
    "",
  ]
  synthetic_md, synthetic_json = parts["synthetic"]
  if synthetic_json.get("collapsed"):
    md += [f"**Synthetic set collapsed or near-constant: {synthetic_json['collapsed']}** (see Synthetic images).", ""]
  skipped = parts["skipped"]
  if skipped:
    shown = "; ".join(f"{s['file']} ({s['reason']})" for s in skipped[:5])
    md += [
      f"**{len(skipped)} input file(s) skipped** (`data.on_error='skip'`, listed in data/skipped.json): "
      f"{shown}{' ...' if len(skipped) > 5 else ''}",
      "",
    ]
  pos = next(iter(results.values()))[0].get("positive_class")
  neg = _neg_name(next(iter(results.values()))[0]["class_names"], pos) if pos else "rest"
  md += [
    f"## Headline: {pos or 'positive'} recall, overkill and leak",
    "",
    f"Counts on the test set and their share: {pos} recall = actual {pos} flagged {pos}; overkill = actual {neg} "
    f"flagged {pos}; leak = passed as {neg} but actually {pos} (share of everything passed). Argmax: the most "
    f"probable class. @thr: the recall-first threshold, rule `{pl.threshold_rule}` chosen on the validation split "
    f"for a target {pos} recall of {100 * float(pl.target_recall):g} % at {100 * float(pl.threshold_confidence):g} "
    "% confidence. Several seeds: mean count over seeds / its denominator (mean ± sample std of the per-seed %). "
    f"The exported epoch is the best by validation `{config.classifier.select_metric}` (ties: validation "
    "log-likelihood).",
    "",
    *headline_table(results, pos),
    *(rule_table(results, pos, neg) if pos else []),
    *interval_tables(parts["intervals"]),
    *galleries_md(parts["galleries"]),
    *curves_md(parts["curves"], work, {g["run"] for g in parts["galleries"].values()}),
    synthetic_md,
    "",
    *triplets_md(parts["triplets"]),
    *appendix_md(results, parts["stage_times"], parts["runs"]),
  ]
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
  skipped_file = work / "data" / "skipped.json"
  parts = {
    "intervals": intervals,
    "stage_times": stage_times,
    "skipped": json.loads(skipped_file.read_text()) if skipped_file.is_file() else [],
    "synthetic": synthetic_report.run(config, work, out),
    "galleries": write_galleries(config, work, out, runs, results),
    "curves": write_curves(config, work, out, runs),
    "triplets": write_triplets(config, work, out),
    "runs": runs,
  }
  md = _markdown(config, work, results, parts)
  files.atomic_write_text(out / "report.md", md)
  title = f"DeepSMOTE comparison: {config.classifier.name} on {config.data.source}"
  files.atomic_write_text(out / "report.html", report_html.markdown_to_html(md, out, title))
  summary = {
    "methods": {m: headline(rs) for m, rs in results.items()},
    "counts": {m: [decision_counts(r) for r in rs] for m, rs in results.items()},
    "intervals": intervals,
    "stage_wall_s": stage_times,
    "runs": list(per_run),
    "figures": parts["triplets"],
    "galleries": parts["galleries"],
    "curves": {k: v["path"] for k, v in parts["curves"]["plots"].items()},
    "tensorboard": {k: v["logdir"] for k, v in parts["curves"]["tensorboard"].items()},
    "tensorboard_note": parts["curves"]["tensorboard_note"],
    "skipped_inputs": len(parts["skipped"]),
    "synthetic": parts["synthetic"][1],
  }
  files.atomic_write_json(out / "report.json", {"summary": summary, "runs": per_run})
  files.atomic_write_json(out / "summary.json", summary)
  return {"methods": list(results)}
