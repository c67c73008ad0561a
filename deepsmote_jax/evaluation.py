"""Evaluate a defect classifier the way an inspection line reads it, and write the results to disk.

`evaluate` turns test labels and (N, C) class probabilities into every number of `deepsmote_jax.metrics`
(argmax decision), optionally a recall-first operating threshold chosen on validation scores by a stated rule
(`metrics.choose_threshold`) beside it, bootstrap 95 % intervals over the test images, and writes
`metrics.json`, `report.md` (the AMOLED paper's Table 1 layout plus unambiguous NG-positive rows) and three
PNGs. `compare_table` puts several runs side by side. The paper's own tables are data in
`deepsmote_jax.paper`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from deepsmote_jax import files
from deepsmote_jax import metrics as M

# ----------------------------------------------------------------------------------------------------
# Input checks


def _as_scores(x: Any, name: str, num_classes: int | None) -> np.ndarray:
  try:
    arr = np.asarray(x, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a numeric (N, C) array: {e}") from None
  if arr.ndim != 2:
    raise ValueError(f"{name} must be an (N, C) array of class probabilities, got shape {arr.shape}")
  if num_classes is not None and arr.shape[1] != num_classes:
    raise ValueError(f"{name} has {arr.shape[1]} columns but class_names has {num_classes} entries")
  if np.isnan(arr).any():
    raise ValueError(f"{name} contains NaN ({int(np.isnan(arr).sum())} entries)")
  if np.isinf(arr).any():
    raise ValueError(f"{name} contains inf")
  return arr


def _as_labels(x: Any, name: str, class_names: Sequence[str]) -> np.ndarray:
  """1-D class indices; accepts indices in [0, C) or the class names themselves."""
  arr = np.asarray(x)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
  if arr.dtype.kind in "USO":
    lookup = {c: i for i, c in enumerate(class_names)}
    unknown = sorted({str(v) for v in arr.tolist()} - set(lookup))
    if unknown:
      raise ValueError(f"{name} has labels not in class_names: {unknown[:5]}")
    return np.array([lookup[str(v)] for v in arr.tolist()], dtype=np.int64)
  if arr.dtype.kind == "b":
    arr = arr.astype(np.int64)
  if arr.dtype.kind == "f":
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
      raise ValueError(f"{name} must contain integer class indices (or class names)")
  elif arr.dtype.kind not in "iu":
    raise ValueError(f"{name} must contain integer class indices (or class names), got dtype {arr.dtype}")
  arr = arr.astype(np.int64)
  if arr.size and (arr.min() < 0 or arr.max() >= len(class_names)):
    raise ValueError(f"{name} has class indices outside [0, {len(class_names)})")
  return arr


def _check_pair(
  labels: Any, scores: Any, lname: str, sname: str, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
  s = _as_scores(scores, sname, len(class_names))
  y = _as_labels(labels, lname, class_names)
  if y.shape[0] != s.shape[0]:
    raise ValueError(f"{lname} and {sname} have different lengths: {y.shape[0]} vs {s.shape[0]}")
  if y.shape[0] == 0:
    raise ValueError(f"{lname} is empty")
  return y, s


# ----------------------------------------------------------------------------------------------------
# evaluate


def _record(notes: list[str], fn, *args):
  """Calls fn, turning UndefinedMetricWarnings into notes."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", M.UndefinedMetricWarning)
    out = fn(*args)
  for w in caught:
    if issubclass(w.category, M.UndefinedMetricWarning):
      msg = str(w.message)
      if msg not in notes:
        notes.append(msg)
    else:
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  return out


def _curves(y: np.ndarray, s: np.ndarray, notes: list[str]) -> dict[str, Any]:
  fpr, tpr, rthr = _record(notes, M.roc_curve, y, s)
  prec, rec, pthr = _record(notes, M.precision_recall_curve, y, s)
  return {
    "roc_auc": _record(notes, M.roc_auc, y, s),
    "average_precision": _record(notes, M.average_precision, y, s),
    "prevalence": float(np.mean(y)),
    "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": rthr.tolist()},
    "pr": {"precision": prec.tolist(), "recall": rec.tolist(), "thresholds": pthr.tolist()},
  }


def _one_vs_rest(cm: np.ndarray, p: int) -> np.ndarray:
  """2×2 matrix of class p against the rest: rows/cols (rest, p)."""
  tp = cm[p, p]
  fn = cm[p].sum() - tp
  fp = cm[:, p].sum() - tp
  tn = cm.sum() - tp - fn - fp
  return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def evaluate(
  y_true: Any,
  scores: Any,
  class_names: Sequence[str],
  *,
  positive_class: str | None = "NG",
  val_true: Any = None,
  val_scores: Any = None,
  target_recall: float = 0.98,
  threshold_rule: str = "tolerance",
  threshold_confidence: float = 0.95,
  threshold_margin: float = 0.0,
  bootstrap: int = 2000,
  bootstrap_seed: int = 0,
  out_dir: str | os.PathLike | None = None,
  title: str = "",
) -> dict[str, Any]:
  """All metrics of a classifier's test predictions; writes the report files when out_dir is given.

  Args:
    y_true: (N,) actual classes, as indices into class_names or as the names themselves.
    scores: (N, C) class probabilities (any scores work; only order matters). Prediction = argmax (first
      class on ties).
    class_names: the C class names, in the column order of scores.
    positive_class: the defect class for the NG-positive binary metrics, curves and threshold. With more
      than two classes it is evaluated one-vs-rest on its own probability column. None skips them (e.g.
      a dataset of defect types only).
    val_true, val_scores: validation labels/scores; when given, a recall-first threshold on the positive
      class's score (its logit when scores are probabilities, see `decision_scores`) is chosen on them by
      `threshold_rule` and applied to the test set beside the argmax decision (`result['threshold']`).
    threshold_rule, threshold_confidence, threshold_margin: the rule ('tolerance', 'min_ng' or
      'val_quantile'), its confidence and a margin subtracted from the threshold (`metrics.choose_threshold`).
    bootstrap, bootstrap_seed: resamples (0 = none) and seed of the stratified percentile bootstrap over
      test images giving 95 % intervals (`result['intervals']`) for NG recall and overkill at the argmax
      decision and at the threshold, ROC AUC and ACSA; conditional on the model and the threshold.
    out_dir: folder for metrics.json, report.md, confusion_matrix.png, pr_curve.png, roc_curve.png.
    title: report heading and the model's name in the Table-1 layout.

  Returns a JSON-compatible dict (NaN where a metric is undefined, explained in `notes`). In
  metrics.json NaN and ±inf are written as null (the first ROC threshold is +inf).
  """
  class_names = [str(c) for c in class_names]
  y, s, val = _check_evaluate_inputs(y_true, scores, class_names, positive_class, val_true, val_scores, target_recall)
  rule = _check_rule(threshold_rule, threshold_confidence, threshold_margin, bootstrap)
  notes: list[str] = []
  cm = M.confusion_matrix(y, np.argmax(s, axis=1), len(class_names))
  mc = M.multiclass_report(cm)
  notes.extend(mc["notes"])
  result = _argmax_result(title, class_names, positive_class, y, cm, mc)
  p = None if positive_class is None else class_names.index(positive_class)
  flagged = None
  if p is not None:
    _add_positive_class(result, cm, y, s, p, notes)
    if val is not None:
      result["threshold"], flagged = _recall_first_threshold(
        result, y, s, val, p, dict(rule, target_recall=target_recall), notes
      )
      result["threshold_rules"] = rule_operating_points(
        val[0], val[1], y, s, p, positive_class, dict(rule, target_recall=target_recall)
      )
  if len(class_names) > 2:
    _add_one_vs_rest(result, y, s, notes)
  if bootstrap:
    result["intervals"] = bootstrap_intervals(y, s, p, flagged, n_resamples=int(bootstrap), seed=int(bootstrap_seed))
  result["notes"] = notes
  if out_dir is not None:
    write_report(result, out_dir)
  return result


def _argmax_result(title: str, class_names: list[str], positive_class, y: np.ndarray, cm, mc: dict) -> dict[str, Any]:
  """`evaluate`'s result with the argmax decision's multiclass metrics; the positive-class parts still None."""
  return {
    "title": title,
    "class_names": class_names,
    "positive_class": positive_class,
    "n": int(y.shape[0]),
    "decision": "argmax",
    "confusion_matrix": cm.tolist(),
    "accuracy": mc["accuracy"],
    "acsa": mc["acsa"],
    "g_mean": mc["g_mean"],
    "macro_f1": mc["macro_f1"],
    "per_class": {
      c: {
        "support": mc["support"][i],
        "predicted": mc["predicted"][i],
        "recall": mc["recall"][i],
        "precision": mc["precision"][i],
        "f1": mc["f1"][i],
      }
      for i, c in enumerate(class_names)
    },
    "binary": None,
    "paper_columns": None,
    "roc_auc": None,
    "average_precision": None,
    "threshold": None,
    "intervals": None,
    "curves": {},
  }


def _check_evaluate_inputs(y_true, scores, class_names, positive_class, val_true, val_scores, target_recall):
  """(labels, scores, (val labels, val scores) or None), with every argument problem named."""
  if len(class_names) < 2:
    raise ValueError(f"class_names needs at least 2 entries, got {class_names}")
  if len(set(class_names)) != len(class_names):
    raise ValueError(f"class_names has duplicates: {class_names}")
  y, s = _check_pair(y_true, scores, "y_true", "scores", class_names)
  if positive_class is not None and positive_class not in class_names:
    raise ValueError(f"positive_class {positive_class!r} is not in class_names {class_names}")
  if (val_true is None) != (val_scores is None):
    missing = "val_scores" if val_scores is None else "val_true"
    raise ValueError(f"val_true and val_scores go together: {missing} is missing")
  if val_true is not None and positive_class is None:
    raise ValueError("a validation threshold needs positive_class")
  if not 0.0 < target_recall <= 1.0:
    raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
  val = None if val_true is None else _check_pair(val_true, val_scores, "val_true", "val_scores", class_names)
  return y, s, val


def _check_rule(rule: str, confidence: float, margin: float, bootstrap: int) -> dict[str, Any]:
  """The threshold rule's settings as `metrics.choose_threshold` takes them, checked."""
  if rule not in M.THRESHOLD_RULES:
    raise ValueError(f"threshold_rule={rule!r}: choose one of {M.THRESHOLD_RULES}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"threshold_confidence must be in (0, 1), got {confidence}")
  if not margin >= 0.0:
    raise ValueError(f"threshold_margin must be >= 0 (score units), got {margin}")
  if int(bootstrap) < 0:
    raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
  return {"rule": rule, "confidence": float(confidence), "margin": float(margin)}


_THRESHOLD_KEYS = (
  ("target_recall", float),
  ("threshold_rule", str),
  ("threshold_confidence", float),
  ("threshold_margin", float),
  ("bootstrap", int),
  ("bootstrap_seed", int),
)


def threshold_settings(section: Mapping[str, Any], name: str = "config.pipeline") -> dict[str, Any]:
  """`evaluate`'s threshold and bootstrap keyword arguments from a config section (target_recall,
  threshold_rule, threshold_confidence, threshold_margin, bootstrap, bootstrap_seed), checked: a bad value is
  a one-line ValueError naming `<name>.<key>`."""
  kw = {}
  for key, cast in _THRESHOLD_KEYS:
    if key not in section:
      raise ValueError(f"{name}.{key} is missing")
    try:
      kw[key] = cast(section[key])
    except (TypeError, ValueError):
      kind = {float: "a number", int: "an integer"}.get(cast, "a string")
      raise ValueError(f"{name}.{key}={section[key]!r} must be {kind}") from None
  try:
    if not 0.0 < kw["target_recall"] <= 1.0:
      raise ValueError(f"target_recall must be in (0, 1], got {kw['target_recall']}")
    _check_rule(kw["threshold_rule"], kw["threshold_confidence"], kw["threshold_margin"], kw["bootstrap"])
  except ValueError as e:
    raise ValueError(f"{name}.{e}") from None
  return kw


def score_scale(*score_arrays: np.ndarray) -> str:
  """'logit' when every array holds probabilities (rows in [0, 1] summing to 1), else 'score'."""
  for s in score_arrays:
    s = np.asarray(s, np.float64)
    if not (s.min() >= 0.0 and s.max() <= 1.0 and np.allclose(s.sum(axis=1), 1.0, atol=1e-3)):
      return "score"
  return "logit"


def decision_scores(scores: np.ndarray, p: int, scale: str) -> np.ndarray:
  """Per-sample score of class p on which thresholds are chosen and applied.

  scale 'logit' (probabilities): `metrics.positive_logit`, which keeps the order of probabilities that saturate
  in float32 and is the scale on which the tolerance rule assumes normality; 'score': the column as it is.
  """
  s = np.asarray(scores, np.float64)
  return M.positive_logit(s, p) if scale == "logit" else s[:, p]


def _add_positive_class(result: dict, cm: np.ndarray, y: np.ndarray, s: np.ndarray, p: int, notes: list) -> None:
  """NG-positive binary metrics (one-vs-rest beyond two classes), the paper's columns, ROC/PR curves."""
  n_cls = len(result["class_names"])
  binary = M.binary_report(cm if n_cls == 2 else _one_vs_rest(cm, p), positive=p if n_cls == 2 else 1)
  notes.extend(binary.pop("notes"))
  result["binary"] = binary
  if n_cls == 2:
    result["paper_columns"] = M.paper_columns(cm, ng=p)
  curves = _curves((y == p).astype(np.int64), s[:, p], notes)
  result["roc_auc"] = curves["roc_auc"]
  result["average_precision"] = curves["average_precision"]
  result["curves"][result["positive_class"]] = curves


_CAVEAT = (
  "where the validation split also picked the epoch (the pipeline: config.classifier.select_metric), its NG "
  "scores can be optimistic; the test columns say what happened on images never used for a choice"
)


def validation_threshold(
  val_true: np.ndarray, val_scores: np.ndarray, p: int, positive_class: str, settings: dict, kind: str | None = None
) -> tuple[dict[str, Any], list[str]]:
  """(the recall-first threshold of class p chosen on validation by `settings` -- rule, confidence, margin,
  target_recall as `metrics.choose_threshold` takes them -- and the rule's notes). `kind`: the score scale
  (`score_scale`; default: from the validation scores). The record is what `evaluate` reports under
  'threshold' before the test columns, and what a deployed model keeps as its decision."""
  vy, vs = np.asarray(val_true), np.asarray(val_scores)
  vyb = (vy == p).astype(np.int64)
  kind = kind or score_scale(vs)
  vscore = decision_scores(vs, p, kind)
  chosen = M.choose_threshold(vyb, vscore, **settings)
  notes = [f"threshold: {n}" for n in chosen.pop("notes")]
  value = chosen.pop("value")
  scale = f"logit P({positive_class})" if kind == "logit" else f"score of {positive_class}"
  prob = value if kind != "logit" or math.isnan(value) else float(1.0 / (1.0 + math.exp(-min(max(value, -700), 700))))
  tinfo: dict[str, Any] = {
    "rule": chosen.pop("rule"),
    "value": prob,  # P(positive) equivalent of value_score (for reading; the decision uses value_score)
    "value_score": value,
    "scale": kind,
    "score": scale,
    "decision": f"predict {positive_class} when {scale} >= value_score",
    "target_recall": chosen.pop("target_recall"),
    "confidence": chosen.pop("confidence"),
    "margin": chosen.pop("margin"),
    "val_n": int(vy.shape[0]),
    "val_n_positive": chosen.pop("n_ng"),
    "guarantee": chosen.pop("guarantee"),
    "caveat": _CAVEAT,
    "details": chosen,  # the rule's own numbers (mean, sd, k, normality_p, expected_recall, ...)
  }
  if math.isnan(value):
    tinfo.update(val_recall=math.nan, val_overkill=math.nan)
    return tinfo, notes
  tinfo["val_recall"] = M.recall_at_threshold(vyb, vscore, value)
  tinfo["val_overkill"] = M.recall_at_threshold(1 - vyb, vscore, value)  # share of validation rest flagged
  if tinfo["val_overkill"] >= 0.5:
    notes.append(
      f"threshold: the {tinfo['rule']} rule flags {100 * tinfo['val_overkill']:.0f} % of validation non-"
      f"{positive_class} images: with {tinfo['val_n_positive']} validation {positive_class} it cannot promise that "
      "recall at a usable overkill (more validation NG, or a lower target_recall / threshold_confidence)"
    )
  return tinfo, notes


def rule_operating_points(
  val_true, val_scores, y_true, scores, p: int, positive_class: str, settings: dict
) -> dict[str, dict[str, float]]:
  """Every threshold rule of `metrics.THRESHOLD_RULES`, each chosen on validation with `settings`' target,
  confidence and margin, and what it did: {rule: {threshold, val_recall, val_overkill, test_recall,
  test_overkill}} (NaN where a rule has no threshold). The trade-off a line engineer picks from, beside the
  report's configured rule."""
  y, s = np.asarray(y_true), np.asarray(scores)
  kind = score_scale(np.asarray(val_scores), s)
  test_scores, actual = decision_scores(s, p, kind), (y == p)
  out = {}
  for rule in M.THRESHOLD_RULES:
    tinfo, _ = validation_threshold(val_true, val_scores, p, positive_class, {**settings, "rule": rule}, kind)
    value = tinfo["value_score"]
    flagged = test_scores >= value if not math.isnan(value) else np.zeros(len(y), bool)
    out[rule] = {
      "threshold": value,
      "val_recall": tinfo["val_recall"],
      "val_overkill": tinfo["val_overkill"],
      "test_recall": float(flagged[actual].mean()) if actual.any() and not math.isnan(value) else math.nan,
      "test_overkill": float(flagged[~actual].mean()) if (~actual).any() and not math.isnan(value) else math.nan,
    }
  return out


def _recall_first_threshold(result: dict, y, s, val, p: int, settings: dict, notes: list) -> tuple[dict, Any]:
  """The rule's threshold on validation scores of class p, and what it does on test; also the test flags."""
  positive_class, n_cls = result["positive_class"], len(result["class_names"])
  kind = score_scale(val[1], s)
  tinfo, rule_notes = validation_threshold(val[0], val[1], p, positive_class, settings, kind)
  notes.extend(rule_notes)
  value = tinfo["value_score"]
  if math.isnan(value):
    tinfo["test"] = None
    return tinfo, None
  flagged = decision_scores(s, p, kind) >= value
  tcm = M.confusion_matrix((y == p).astype(np.int64), flagged.astype(np.int64), 2)  # (rest, positive)
  trep = M.binary_report(tcm, positive=1)
  notes.extend(f"at threshold: {n}" for n in trep.pop("notes"))
  tinfo["test"] = trep
  if n_cls == 2:  # back to class_names order
    full = tcm if p == 1 else tcm[::-1, ::-1]
    tinfo["confusion_matrix"] = np.asarray(full).tolist()
    tinfo["paper_columns"] = M.paper_columns(full, ng=p)
  return tinfo, flagged


def bootstrap_intervals(
  y: np.ndarray, s: np.ndarray, p: int | None, flagged: np.ndarray | None, *, n_resamples: int, seed: int
) -> dict[str, Any]:
  """Percentile bootstrap 95 % intervals over the test images (stratified by class, seeded, vectorised).

  ACSA; with a positive class p also NG recall and overkill at the argmax decision and at the threshold
  (`flagged`: the test images it flags), each with the exact Clopper-Pearson interval on its counts (the
  bootstrap collapses to a point at 0 % or 100 %), and the ROC AUC of P(p). Conditional on the trained model
  and the chosen threshold: the variation from training and from the validation split is not in them.
  """
  w = M.stratified_bootstrap_weights(y, n_resamples, seed)
  pred = np.argmax(s, axis=1)
  present = np.unique(y)
  acsa_b = np.mean([M.bootstrap_rate(w, y == c, pred == c) for c in present], axis=0)
  out: dict[str, Any] = {
    "method": f"percentile bootstrap over test images, stratified by class, {n_resamples} resamples, seed {seed}",
    "level": 0.95,
    "n_resamples": int(n_resamples),
    "seed": int(seed),
    "acsa": _interval(float(np.mean([np.mean(pred[y == c] == c) for c in present])), acsa_b),
  }
  if p is None:
    return out
  actual, argmax_flags = y == p, pred == p
  rows = [("ng_recall", actual, argmax_flags), ("overkill_rate", ~actual, argmax_flags)]
  if flagged is not None:
    flagged = np.asarray(flagged, bool)
    rows += [("ng_recall_at_threshold", actual, flagged), ("overkill_at_threshold", ~actual, flagged)]
  for name, members, flags in rows:
    k, n = int(np.sum(flags & members)), int(np.sum(members))
    out[name] = _interval(k / n if n else math.nan, M.bootstrap_rate(w, members, flags), M.clopper_pearson(k, n))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", M.UndefinedMetricWarning)
    auc = M.roc_auc(actual.astype(np.int64), s[:, p])
  out["roc_auc"] = _interval(auc, M.bootstrap_roc_auc(w, actual.astype(np.int64), s[:, p]))
  return out


def _interval(point: float, samples: np.ndarray, exact: tuple[float, float] | None = None) -> dict[str, float]:
  lo, hi = M.percentile_interval(samples, 0.95)
  out = {"value": point, "low": lo, "high": hi}
  if exact is not None:
    out.update(exact_low=exact[0], exact_high=exact[1])
  return out


def _add_one_vs_rest(result: dict, y: np.ndarray, s: np.ndarray, notes: list) -> None:
  """Per-class one-vs-rest ROC AUC and their macro mean; curves per class when there is no positive class."""
  class_names, positive_class = result["class_names"], result["positive_class"]
  aucs = []
  for i, c in enumerate(class_names):
    auc = result["roc_auc"] if c == positive_class else _record(notes, M.roc_auc, (y == i).astype(np.int64), s[:, i])
    result["per_class"][c]["roc_auc_ovr"] = auc
    aucs.append(auc)
  finite = [a for a in aucs if not math.isnan(a)]
  result["roc_auc_ovr_macro"] = float(np.mean(finite)) if finite else math.nan
  if positive_class is None:
    for i, c in enumerate(class_names):
      result["curves"][c] = _curves((y == i).astype(np.int64), s[:, i], notes)


# ----------------------------------------------------------------------------------------------------
# Files


def write_report(result: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
  """Writes metrics.json, report.md and the three PNGs of an `evaluate` result; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {
    name: os.path.join(out_dir, name)
    for name in ("metrics.json", "report.md", "confusion_matrix.png", "pr_curve.png", "roc_curve.png")
  }
  files.atomic_write_json(paths["metrics.json"], result, indent=1)
  files.atomic_write_text(paths["report.md"], report_markdown(result))
  _plot_confusion(result, paths["confusion_matrix.png"])
  _plot_curves(result, "pr", paths["pr_curve.png"])
  _plot_curves(result, "roc", paths["roc_curve.png"])
  return paths


def _pct(v: Any, digits: int = 2) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  return f"{100.0 * v:.{digits}f}"


def _num(v: Any, digits: int = 4) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  if isinstance(v, float) and math.isinf(v):
    return "inf" if v > 0 else "-inf"
  return f"{v:.{digits}f}"


def paper_layout_table(
  rows: Mapping[str, Any], class_names: Sequence[str] = ("OK", "NG"), ng: int = 1, footnote: bool = True
) -> str:
  """Markdown table in the AMOLED paper's Table 1 layout: per model, one row per ACTUAL class.

  `rows` maps model name → 2×2 confusion matrix (rows actual, columns predicted, in class_names order).
  The Accuracy/Precision/Recall/F1 columns are the paper's (`metrics.paper_columns`), marked with *.
  """
  ok = 1 - ng
  names = list(class_names)
  order = [ok, ng]
  head = (
    f"| Model | Actual | Predicted {names[ok]} | Predicted {names[ng]} | Accuracy (%) | Precision* (%) | "
    "Recall* (%) | F1* (%) |\n|---|---|---:|---:|---:|---:|---:|---:|\n"
  )
  body = []
  for model, cm in rows.items():
    cm = np.asarray(cm)
    pc = M.paper_columns(cm, ng=ng)
    for j, a in enumerate(order):
      vals = [_pct(pc[k]) for k in ("accuracy", "precision", "recall", "f1")] if j == 0 else [""] * 4
      body.append(f"| {model if j == 0 else ''} | {names[a]} | {cm[a, ok]} | {cm[a, ng]} | " + " | ".join(vals) + " |")
  foot = (
    f"\n\\* As the paper computed them: {names[ok]} is the positive class and precision/recall are "
    f"swapped, i.e. Precision* = {names[ok]} recall = TN/(TN+FP), Recall* = share of panels passed as "
    f"{names[ok]} that are {names[ok]} = TN/(TN+FN), F1* = their harmonic mean (TP = {names[ng]} flagged "
    f"{names[ng]}). See the {names[ng]}-positive rows for the numbers to act on.\n"
  )
  return head + "\n".join(body) + "\n" + (foot if footnote else "")


def _binary_rows(b: Mapping[str, Any], pos: str, neg: str) -> list[str]:
  """Summary rows of a binary report; with neg == 'rest' the accuracy is the positive-vs-rest one."""
  tp, fn, fp, tn = b["tp"], b["fn"], b["fp"], b["tn"]
  acc = "Accuracy" if neg != "rest" else f"{pos}-vs-rest accuracy"
  rows = [  # (name, value, numerator, denominator, definition)
    (f"{pos} recall (catch rate)", b["recall"], tp, tp + fn, f"actual {pos} flagged {pos}"),
    ("Leak rate", b["leak_rate"], fn, fn + tn, f"passed as {neg} but actually {pos}"),
    ("Overkill rate", b["overkill_rate"], fp, fp + tn, f"actual {neg} flagged {pos}"),
    (f"{pos} precision", b["precision"], tp, tp + fp, f"flagged {pos} that are {pos}"),
    (f"{pos} F1", b["f1"], None, None, "2TP/(2TP+FP+FN)"),
    (f"Specificity ({neg} recall)", b["specificity"], tn, tn + fp, f"actual {neg} passed"),
    (acc, b["accuracy"], tp + tn, b["n"], ""),
  ]
  return [f"| {name} | {_pct(v)} | {'' if a is None else f'{a}/{d}'} | {what} |" for name, v, a, d, what in rows]


def report_markdown(result: Mapping[str, Any]) -> str:
  """The report.md text of an `evaluate` result."""
  names = result["class_names"]
  cm = np.asarray(result["confusion_matrix"])
  pos = result["positive_class"]
  model = result["title"] or "model"
  out = [
    f"# {result['title'] or 'Evaluation report'}",
    "",
    f"{result['n']} test samples; prediction = argmax of the class probabilities. "
    "Confusion matrices: rows = actual class, columns = predicted class.",
    "",
  ]
  binary2 = len(names) == 2 and pos is not None
  if binary2:
    ng = names.index(pos)
    neg = names[1 - ng]
    out += ["## Table 1 layout (AMOLED paper)", "", paper_layout_table({model: cm}, names, ng)]
  else:
    out += [
      "## Confusion matrix",
      "",
      "| Actual \\ Predicted | " + " | ".join(names) + " | Total |",
      "|---|" + "---:|" * (len(names) + 1),
    ]
    out += [f"| {names[i]} | " + " | ".join(str(v) for v in cm[i]) + f" | {cm[i].sum()} |" for i in range(len(names))]
    out += [
      "",
      "## Per class",
      "",
      "| Class | Support | Recall (%) | Precision (%) | F1 (%) | ROC AUC one-vs-rest (%) |",
      "|---|---:|---:|---:|---:|---:|",
    ]
    for c in names:
      pc = result["per_class"][c]
      out.append(
        f"| {c} | {pc['support']} | {_pct(pc['recall'])} | {_pct(pc['precision'])} | {_pct(pc['f1'])} | "
        f"{_pct(pc.get('roc_auc_ovr'))} |"
      )
    neg = "rest"
  out += ["", "## Summary", "", "| Metric | Value (%) | Counts | Definition |", "|---|---:|---:|---|"]
  if pos is not None:
    out += _binary_rows(result["binary"], pos, neg)
  if not binary2:
    out.append(
      f"| Accuracy ({len(names)} classes) | {_pct(result['accuracy'])} | {int(np.trace(cm))}/{result['n']} | |"
    )
  out += [
    f"| ACSA (balanced accuracy) | {_pct(result['acsa'])} | | mean per-class recall |",
    f"| G-mean | {_pct(result['g_mean'])} | | geometric mean of per-class recalls |",
    f"| Macro-F1 | {_pct(result['macro_f1'])} | | mean per-class F1 |",
  ]
  if pos is not None:
    out += [
      f"| ROC AUC ({pos}) | {_pct(result['roc_auc'])} | | from P({pos}) |",
      f"| Average precision ({pos}) | {_pct(result['average_precision'])} | | from P({pos}) |",
    ]
  if "roc_auc_ovr_macro" in result:
    out.append(f"| ROC AUC (macro one-vs-rest) | {_pct(result['roc_auc_ovr_macro'])} | | |")
  out += _threshold_md(result, model, neg) + _intervals_md(result)
  if result.get("notes"):
    out += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
  return "\n".join(out) + "\n"


RULE_TEXT = {
  "tolerance": "one-sided normal tolerance bound on the validation {pos} scores, mean - k·sd",
  "min_ng": "the lowest validation {pos} score",
  "val_quantile": "the highest threshold with validation {pos} recall >= the target",
}


def _threshold_md(result: Mapping[str, Any], model: str, neg: str) -> list[str]:
  """The recall-first threshold section of report.md: rule, guarantee, validation and test numbers."""
  t, names, pos = result.get("threshold"), result["class_names"], result["positive_class"]
  if not t:
    return []
  margin = f", margin {t['margin']:g}" if t["margin"] else ""
  out = [
    "",
    f"## Recall-first threshold (rule `{t['rule']}`, chosen on validation)",
    "",
    f"{RULE_TEXT[t['rule']].format(pos=pos)}; {t['val_n_positive']} {pos} in {t['val_n']} validation samples, "
    f"target {pos} recall {_pct(t['target_recall'])} %, confidence {_pct(t['confidence'], 0)} %{margin}; "
    f"{t['decision']}.",
    "",
    f"- guarantee: {t['guarantee']}",
    f"- caveat: {t['caveat']}",
    *_certify_line(t, pos),
    f"- threshold: {t['score']} >= {_num(t['value_score'], 4)}"
    + (f" (P({pos}) >= {_num(t['value'], 6)})" if t["scale"] == "logit" else ""),
    f"- validation {pos} recall: {_pct(t['val_recall'])} %; validation overkill: {_pct(t.get('val_overkill'))} %",
    "",
  ]
  if t.get("test"):
    if t.get("confusion_matrix") is not None:
      table = paper_layout_table({f"{model} @ threshold": t["confusion_matrix"]}, names, names.index(pos), False)
      out += [table, ""]
    out += ["| Metric (test, at threshold) | Value (%) | Counts | Definition |", "|---|---:|---:|---|"]
    out += _binary_rows(t["test"], pos, neg)
  return out


def _certify_line(t: Mapping[str, Any], pos: str) -> list[str]:
  """How many validation NG a distribution-free guarantee of the target recall takes, against how many there are."""
  needed = (t.get("details") or {}).get("ng_to_certify")
  if not needed:
    return []
  have = t["val_n_positive"]
  verdict = "enough" if have >= needed else f"{needed - have} short: collect more {pos} images or accept the model"
  return [
    f"- {pos} images needed to show the target recall without a distributional assumption: {needed} "
    f"(validation has {have}; {verdict})"
  ]


def _ci(entry: Mapping[str, Any] | None, exact: bool = False) -> str:
  if not entry:
    return "–"
  lo, hi = (entry["exact_low"], entry["exact_high"]) if exact else (entry["low"], entry["high"])
  return f"[{_pct(lo)}, {_pct(hi)}]"


def _intervals_md(result: Mapping[str, Any]) -> list[str]:
  """The argmax decision beside the threshold, with bootstrap and exact 95 % intervals."""
  iv, pos = result.get("intervals"), result["positive_class"]
  if not iv:
    return []
  out = ["", "## Decisions side by side, 95 % intervals", "", f"{iv['method']}; " + _INTERVAL_NOTE, ""]
  if pos is not None:
    out += [
      f"| Decision | {pos} recall (%) | bootstrap CI | exact CI | Overkill (%) | bootstrap CI | exact CI |",
      "|---|---:|---:|---:|---:|---:|---:|",
    ]
    t = result.get("threshold")
    rows = [("argmax", "ng_recall", "overkill_rate")]
    if "ng_recall_at_threshold" in iv:
      rows.append((f"threshold ({t['rule']})", "ng_recall_at_threshold", "overkill_at_threshold"))
    for label, r, o in rows:
      out.append(
        f"| {label} | {_pct(iv[r]['value'])} | {_ci(iv[r])} | {_ci(iv[r], True)} | {_pct(iv[o]['value'])} | "
        f"{_ci(iv[o])} | {_ci(iv[o], True)} |"
      )
    out.append("")
    out.append(f"ROC AUC ({pos}): {_pct(iv['roc_auc']['value'])} % {_ci(iv['roc_auc'])}; " + _acsa_ci(iv))
  else:
    out.append(_acsa_ci(iv))
  return out


def _acsa_ci(iv: Mapping[str, Any]) -> str:
  return f"ACSA (argmax): {_pct(iv['acsa']['value'])} % {_ci(iv['acsa'])}."


_INTERVAL_NOTE = (
  "conditional on the trained model and the chosen threshold (training and validation variation are not in "
  "them); exact = Clopper-Pearson on the counts, informative where the bootstrap collapses at 0 % or 100 %."
)


def _figure(figsize=(5.0, 4.5)):
  """A matplotlib Figure on the Agg canvas (no pyplot, no global backend change)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=figsize, dpi=120)
  FigureCanvasAgg(fig)
  return fig


def _plot_confusion(result: Mapping[str, Any], path: str) -> None:
  """scikit-learn's ConfusionMatrixDisplay, coloured by the share of each actual class, cells 'count / %'."""
  names = result["class_names"]
  cm = np.asarray(result["confusion_matrix"], dtype=np.float64)
  rows = cm.sum(axis=1, keepdims=True)
  frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
  k = len(names)
  fig = _figure((1.2 * k + 2.5, 1.1 * k + 2.0))
  ax = fig.add_subplot()
  disp = ConfusionMatrixDisplay(frac, display_labels=names).plot(
    ax=ax, cmap="Blues", im_kw={"vmin": 0.0, "vmax": 1.0}, text_kw={"fontsize": 8}, xticks_rotation=45 if k > 4 else 0
  )
  for i in range(k):
    for j in range(k):
      disp.text_[i, j].set_text(f"{int(cm[i, j])}\n{100 * frac[i, j]:.1f}%")
  disp.im_.colorbar.set_label("share of actual class")
  ax.set_xlabel("Predicted")
  ax.set_ylabel("Actual")
  ax.set_title(result["title"] or "Confusion matrix")
  fig.tight_layout()
  fig.savefig(path)


def _plot_curves(result: Mapping[str, Any], kind: str, path: str) -> None:
  """scikit-learn's RocCurveDisplay / PrecisionRecallDisplay of the saved curves, plus the operating points
  (argmax and the recall-first threshold)."""
  fig = _figure()
  ax = fig.add_subplot()
  curves = result.get("curves") or {}
  for name, c in curves.items():
    if kind == "roc":
      x, y = np.asarray(c["roc"]["fpr"], float), np.asarray(c["roc"]["tpr"], float)
    else:
      x, y = np.asarray(c["pr"]["recall"], float), np.asarray(c["pr"]["precision"], float)
    if np.isnan(x).any() or np.isnan(y).any():
      ax.text(0.5, 0.5, f"{name}: undefined (one class absent)", ha="center", transform=ax.transAxes)
      continue
    if kind == "roc":
      RocCurveDisplay(fpr=x, tpr=y, roc_auc=c["roc_auc"], name=name).plot(ax=ax, plot_chance_level=True)
    else:
      PrecisionRecallDisplay(precision=y, recall=x, average_precision=c["average_precision"], name=name).plot(ax=ax)
  b, t = result.get("binary"), result.get("threshold")
  points = [("argmax", b)] + ([("threshold", t["test"])] if t and t.get("test") else [])
  for label, rep in points:
    if rep is None:
      continue
    xy = (rep["overkill_rate"], rep["recall"]) if kind == "roc" else (rep["recall"], rep["precision"])
    if not any(v is None or math.isnan(v) for v in xy):
      ax.plot(*xy, "o", label=f"{label}: ({xy[0]:.3f}, {xy[1]:.3f})")
  if kind == "roc":
    ax.set_xlabel("False positive rate (overkill)")
    ax.set_ylabel("True positive rate (recall)")
  else:
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
  ax.set_xlim(-0.02, 1.02)
  ax.set_ylim(-0.02, 1.02)
  ax.set_title((result["title"] + " " if result["title"] else "") + ("ROC curve" if kind == "roc" else "PR curve"))
  if ax.get_legend_handles_labels()[0]:
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)


# ----------------------------------------------------------------------------------------------------
# Comparison table

_DEFAULT_COLUMNS = (
  ("accuracy", "Accuracy"),
  ("binary.recall", "NG recall"),
  ("binary.leak_rate", "Leak rate"),
  ("binary.overkill_rate", "Overkill"),
  ("binary.precision", "NG precision"),
  ("binary.f1", "NG F1"),
  ("acsa", "ACSA"),
  ("g_mean", "G-mean"),
  ("macro_f1", "Macro-F1"),
  ("roc_auc", "ROC AUC"),
  ("average_precision", "AP"),
  ("threshold.test.recall", "NG recall @thr"),
  ("threshold.test.overkill_rate", "Overkill @thr"),
  ("threshold.test.leak_rate", "Leak @thr"),
)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping):
      if key != "curves":
        out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _values(entry: Any) -> dict[str, list[float]]:
  """metric → list of values (one per seed) for one model/method."""
  runs = entry if isinstance(entry, (list, tuple)) and entry and all(isinstance(e, Mapping) for e in entry) else [entry]
  acc: dict[str, list[float]] = {}
  for run in runs:
    if not isinstance(run, Mapping):
      raise ValueError(f"results values must be dicts or lists of dicts, got {type(run).__name__}")
    for k, v in _flatten(run).items():
      if _is_number(v):
        acc.setdefault(k, []).append(v)
      elif isinstance(v, (list, tuple, np.ndarray)) and len(v) and all(_is_number(x) for x in v):
        acc.setdefault(k, []).extend(v)
  return acc


def compare_table(
  results: Mapping[str, Any], metrics: Sequence[str] | None = None, *, percent: bool = True, digits: int = 2
) -> str:
  """Markdown table, one row per model/method, one column per metric.

  A result is a dict (e.g. `evaluate`'s output; nested keys are addressed as 'binary.recall') whose values
  are numbers or lists of numbers over seeds, or a list of such dicts (one per seed). Several values are
  shown as mean ± std (sample std, ddof=1). `metrics` picks columns (default: the usual inspection metrics
  found in the results, else every numeric key); ratios are shown in % when `percent`; integer counts as is.
  """
  if not results:
    raise ValueError("results is empty")
  vals = {name: _values(entry) for name, entry in results.items()}
  labels = dict(_DEFAULT_COLUMNS)
  if metrics is None:
    present = {k for v in vals.values() for k in v}
    metrics = [k for k, _ in _DEFAULT_COLUMNS if k in present]
    if not metrics:
      metrics = list(dict.fromkeys(k for v in vals.values() for k in v))
  metrics = list(metrics)
  if not metrics:
    raise ValueError("results have no numeric metrics")

  def cell(xs: list[float] | None) -> str:
    if not xs:
      return "–"
    arr = np.asarray(xs, dtype=np.float64)
    is_count = all(isinstance(x, (int, np.integer)) for x in xs)
    scale = 1.0 if is_count or not percent else 100.0
    finite = arr[np.isfinite(arr)]
    if not finite.size:
      return "n/a"
    mean = scale * finite.mean()
    fmt = (lambda x: f"{x:.0f}") if is_count and len(xs) == 1 else (lambda x: f"{x:.{digits}f}")
    s = fmt(mean)
    if len(xs) > 1:
      s += f" ± {fmt(scale * finite.std(ddof=1)) if finite.size > 1 else 'n/a'}"
    if finite.size < arr.size:
      s += f" ({arr.size - finite.size} n/a)"
    return s

  def header(m: str) -> str:
    xs = [x for v in vals.values() for x in v.get(m, [])]
    is_count = xs and all(isinstance(x, (int, np.integer)) for x in xs)
    return labels.get(m, m) + (" (%)" if percent and not is_count else "")

  head = "| Model | " + " | ".join(header(m) for m in metrics) + " |"
  lines = [head, "|---|" + "---:|" * len(metrics)]
  for name, v in vals.items():
    lines.append(f"| {name} | " + " | ".join(cell(v.get(m)) for m in metrics) + " |")
  if any(len(x) > 1 for v in vals.values() for x in v.values()):
    lines.append("")
    lines.append("Several values (seeds): mean ± sample std (ddof=1).")
  return "\n".join(lines) + "\n"


__all__ = [
  "evaluate",
  "bootstrap_intervals",
  "threshold_settings",
  "score_scale",
  "decision_scores",
  "write_report",
  "report_markdown",
  "paper_layout_table",
  "compare_table",
]
