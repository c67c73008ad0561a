"""Classification metrics for defect inspection: scikit-learn's, in the inspection line's terms.

Conventions used throughout:

* Confusion matrices have rows = ACTUAL class and columns = PREDICTED class (as scikit-learn and the
  AMOLED paper's Table 1).
* Binary reports treat the defect class (NG) as the positive class, so `recall` is the NG catch rate.
  The AMOLED paper computed its four columns with OK as the positive class and with precision and recall
  swapped; `paper_columns` reproduces those numbers and says so in its keys' documentation. Never mix
  the two.
* A ratio whose denominator is zero (0/0, e.g. the recall of a class with no samples) is NaN, as
  scikit-learn with `zero_division=np.nan`. Averages over classes (ACSA, G-mean, macro-F1) skip NaN
  classes, as scikit-learn's `balanced_accuracy_score` and macro `f1_score(zero_division=np.nan)` do.
  Functions returning a bare number emit an `UndefinedMetricWarning` when they return NaN or skip a class;
  report functions collect the same messages in a `notes` list instead.
* Confusion matrices and score curves are scikit-learn's (ties included: all samples sharing a score form one
  point; a sample is predicted positive when `score >= threshold`). What is added here: the NG-first binary
  report, the paper's columns, recall-first thresholds with stated guarantees and vectorised bootstrap
  intervals, which scikit-learn does not have.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import sklearn.exceptions
from sklearn import metrics as skm


class UndefinedMetricWarning(RuntimeWarning):
  """A metric is undefined (0/0 or a class absent) and was returned as NaN or computed without it."""


def _warn(msg: str) -> None:
  warnings.warn(msg, UndefinedMetricWarning, stacklevel=3)


def _ratio(num: float, den: float) -> float:
  """num/den, NaN when den == 0 (scikit-learn's zero_division=np.nan)."""
  return float(num) / float(den) if den else math.nan


def _labels_1d(x: Any, name: str) -> np.ndarray:
  arr = np.asarray(x)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    if np.issubdtype(arr.dtype, np.bool_):
      return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
      raise ValueError(f"{name} must contain integer class indices, got dtype {arr.dtype}")
  return arr.astype(np.int64)


def _scores_1d(x: Any, name: str) -> np.ndarray:
  arr = np.asarray(x, dtype=np.float64)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
  if np.isnan(arr).any():
    raise ValueError(f"{name} contains NaN")
  return arr


def _binary_inputs(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
  y = _labels_1d(y_true, "y_true")
  s = _scores_1d(scores, "scores")
  if y.shape != s.shape:
    raise ValueError(f"y_true and scores have different lengths: {y.shape[0]} vs {s.shape[0]}")
  if np.any((y != 0) & (y != 1)):
    raise ValueError("y_true must be binary (0 = OK/negative, 1 = NG/positive)")
  return y, s


# ----------------------------------------------------------------------------------------------------
# Confusion matrix and binary (NG-positive) report


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
  """(C, C) int64 counts, rows = actual class, columns = predicted class.

  `num_classes` fixes C so absent classes still get a row/column; None uses max(label) + 1.
  """
  yt = _labels_1d(y_true, "y_true")
  yp = _labels_1d(y_pred, "y_pred")
  if yt.shape != yp.shape:
    raise ValueError(f"y_true and y_pred have different lengths: {yt.shape[0]} vs {yp.shape[0]}")
  if num_classes is None:
    num_classes = int(max(yt.max(initial=-1), yp.max(initial=-1))) + 1
  c = int(num_classes)
  if c < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  for name, arr in (("y_true", yt), ("y_pred", yp)):
    if arr.size and (arr.min() < 0 or arr.max() >= c):
      raise ValueError(f"{name} has labels outside [0, {c}): min {arr.min()}, max {arr.max()}")
  return skm.confusion_matrix(yt, yp, labels=np.arange(c)).astype(np.int64)


def _check_cm(cm: Any, square: bool = True) -> np.ndarray:
  arr = np.asarray(cm)
  if arr.ndim != 2 or (square and arr.shape[0] != arr.shape[1]):
    raise ValueError(f"cm must be a square (C, C) matrix, got shape {arr.shape}")
  if np.any(arr < 0):
    raise ValueError("cm has negative counts")
  return arr


def binary_counts(cm_or_counts: Any, positive: int = 1) -> dict[str, int]:
  """TP/FN/FP/TN with `positive` (the NG class index) as the positive class.

  Accepts a 2×2 confusion matrix (rows actual) or a mapping with keys tp, fn, fp, tn.
  """
  if isinstance(cm_or_counts, Mapping):
    missing = {"tp", "fn", "fp", "tn"} - set(cm_or_counts)
    if missing:
      raise ValueError(f"cm_or_counts is missing counts {sorted(missing)}")
    return {k: int(cm_or_counts[k]) for k in ("tp", "fn", "fp", "tn")}
  cm = _check_cm(cm_or_counts)
  if cm.shape != (2, 2):
    raise ValueError(f"cm_or_counts must be 2×2 for a binary report, got {cm.shape}")
  if positive not in (0, 1):
    raise ValueError(f"positive must be 0 or 1, got {positive}")
  p, n = positive, 1 - positive
  return {"tp": int(cm[p, p]), "fn": int(cm[p, n]), "fp": int(cm[n, p]), "tn": int(cm[n, n])}


def binary_report(cm_or_counts: Any, positive: int = 1) -> dict[str, Any]:
  """Inspection metrics with NG (`positive`) as the positive class; every ratio in [0, 1] or NaN.

  Keys (TP = NG flagged NG, FN = NG passed as OK, FP = OK flagged NG, TN = OK passed as OK):
    recall        TP/(TP+FN)  NG catch rate, share of actual NG that are flagged (a.k.a. sensitivity).
    miss_rate     FN/(TP+FN)  share of actual NG passed as OK (1 - recall).
    precision     TP/(TP+FP)  share of flagged panels that really are NG.
    f1            2TP/(2TP+FP+FN).
    specificity   TN/(TN+FP)  OK recall, share of actual OK passed.
    overkill_rate FP/(FP+TN)  share of actual OK flagged NG (1 - specificity): good panels scrapped or
                              sent to re-inspection.
    leak_rate     FN/(FN+TN)  share of panels passed as OK that are actually NG (1 - NPV): defects that
                              reach the customer, per panel shipped.
    accuracy, balanced_accuracy (mean of recall and specificity), plus the counts and `notes`.
  """
  c = binary_counts(cm_or_counts, positive)
  tp, fn, fp, tn = c["tp"], c["fn"], c["fp"], c["tn"]
  n_pos, n_neg, n = tp + fn, fp + tn, tp + fn + fp + tn
  rep: dict[str, Any] = dict(c)
  rep.update(
    n=n,
    n_actual_positive=n_pos,
    n_actual_negative=n_neg,
    n_flagged=tp + fp,
    n_passed=fn + tn,
    recall=_ratio(tp, n_pos),
    miss_rate=_ratio(fn, n_pos),
    precision=_ratio(tp, tp + fp),
    f1=_ratio(2 * tp, 2 * tp + fp + fn),
    specificity=_ratio(tn, n_neg),
    overkill_rate=_ratio(fp, n_neg),
    leak_rate=_ratio(fn, fn + tn),
    accuracy=_ratio(tp + tn, n),
  )
  rep["balanced_accuracy"] = float(np.nanmean([rep["recall"], rep["specificity"]])) if n else math.nan
  notes = []
  if n_pos == 0:
    notes.append("no actual NG samples: recall and miss_rate are NaN")
  if n_neg == 0:
    notes.append("no actual OK samples: specificity and overkill_rate are NaN")
  if tp + fp == 0:
    notes.append("nothing flagged NG: precision is NaN")
  if fn + tn == 0:
    notes.append("nothing passed as OK: leak_rate is NaN")
  if (n_pos == 0) != (n_neg == 0):
    notes.append("balanced_accuracy uses the one class present")
  rep["notes"] = notes
  return rep


def paper_columns(cm: Any, ng: int = 1) -> dict[str, Any]:
  """The AMOLED paper's Table 1 columns, computed exactly as the paper did (NOT standard NG metrics).

  The paper used OK as the positive class and swapped precision and recall:
    accuracy       (TP+TN)/N.
    precision      labelled 'Precision' in the paper = OK recall = TN/(TN+FP) (with NG positive).
    recall         labelled 'Recall' in the paper = share of panels passed as OK that are OK = TN/(TN+FN).
    f1             harmonic mean of the two above = 2TN/(2TN+FP+FN).
  For InceptionV3 (rows actual OK [2457, 267], actual NG [22, 927]) this gives 92.13 / 90.20 / 99.11 /
  94.45 % (the paper prints 94.46). Use `binary_report` for numbers to act on.
  """
  c = binary_counts(cm, positive=ng)
  tp, fn, fp, tn = c["tp"], c["fn"], c["fp"], c["tn"]
  return {
    "accuracy": _ratio(tp + tn, tp + fn + fp + tn),
    "precision": _ratio(tn, tn + fp),
    "recall": _ratio(tn, tn + fn),
    "f1": _ratio(2 * tn, 2 * tn + fp + fn),
  }


# ----------------------------------------------------------------------------------------------------
# Multi-class


def multiclass_report(cm: Any) -> dict[str, Any]:
  """Per-class recall/precision/F1 and the DeepSMOTE paper's averages from a (C, C) matrix.

  acsa      average class-specific accuracy = mean per-class recall = balanced accuracy.
  g_mean    geometric mean of per-class recalls (0 if any present class has recall 0).
  macro_f1  unweighted mean of per-class F1.
  Classes absent from the actual labels have NaN recall and are left out of ACSA and G-mean; a class
  neither present nor predicted has NaN F1 and is left out of macro-F1 (scikit-learn's behaviour).
  """
  cm = _check_cm(cm).astype(np.int64)
  c = cm.shape[0]
  tp = np.diag(cm).astype(np.float64)
  support = cm.sum(axis=1)
  predicted = cm.sum(axis=0)
  n = int(cm.sum())
  recall = [_ratio(tp[i], support[i]) for i in range(c)]
  precision = [_ratio(tp[i], predicted[i]) for i in range(c)]
  f1 = [_ratio(2 * tp[i], support[i] + predicted[i]) for i in range(c)]
  notes = []
  absent = [i for i in range(c) if support[i] == 0]
  if absent:
    notes.append(
      f"classes {absent} have no actual samples: their recall is NaN and they are left out of ACSA and G-mean"
    )
  unpredicted = [i for i in range(c) if predicted[i] == 0]
  if unpredicted:
    notes.append(f"classes {unpredicted} are never predicted: their precision is NaN")
  unused = [i for i in range(c) if support[i] == 0 and predicted[i] == 0]
  if unused:
    notes.append(
      f"classes {unused} are neither present nor predicted: their F1 is NaN and they are left out of macro-F1"
    )
  r = np.array([x for x in recall if not math.isnan(x)])
  f = np.array([x for x in f1 if not math.isnan(x)])
  return {
    "n": n,
    "accuracy": _ratio(tp.sum(), n),
    "support": support.tolist(),
    "predicted": predicted.tolist(),
    "recall": recall,
    "precision": precision,
    "f1": f1,
    "acsa": float(r.mean()) if r.size else math.nan,
    "g_mean": _gmean(r),
    "macro_f1": float(f.mean()) if f.size else math.nan,
    "notes": notes,
  }


def _gmean(r: np.ndarray) -> float:
  if not r.size:
    return math.nan
  if np.any(r == 0):
    return 0.0
  return float(np.exp(np.mean(np.log(r))))


def _report_scalar(cm: Any, key: str) -> float:
  """One average of `multiclass_report`, warning about the classes it leaves out."""
  rep = multiclass_report(cm)
  topic = "macro-F1" if key == "macro_f1" else "ACSA"
  for note in rep["notes"]:
    if topic in note:
      _warn(note)
  return rep[key]


def acsa(cm: Any) -> float:
  """Average class-specific accuracy (= balanced accuracy, mean per-class recall) of a confusion matrix."""
  return _report_scalar(cm, "acsa")


def g_mean(cm: Any) -> float:
  """Geometric mean of the per-class recalls of a confusion matrix."""
  return _report_scalar(cm, "g_mean")


def macro_f1(cm: Any) -> float:
  """Unweighted mean of the per-class F1 scores of a confusion matrix."""
  return _report_scalar(cm, "macro_f1")


# ----------------------------------------------------------------------------------------------------
# Score curves: scikit-learn's, with NaN (and an UndefinedMetricWarning) where a class is absent


def _sklearn_quiet(fn, *args, **kwargs):
  """A scikit-learn metric call with its own undefined-metric warnings silenced (this module words them)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", sklearn.exceptions.UndefinedMetricWarning)
    warnings.filterwarnings("ignore", message="No (positive|negative) (class|samples) found")
    return fn(*args, **kwargs)


def roc_curve(y_true: Any, scores: Any, *, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(fpr, tpr, thresholds) of `sklearn.metrics.roc_curve`; thresholds[0] = inf; NaN rates if a class is absent."""
  y, s = _binary_inputs(y_true, scores)
  if not y.size:
    raise ValueError("y_true is empty")
  fpr, tpr, thr = _sklearn_quiet(skm.roc_curve, y, s, drop_intermediate=drop_intermediate)
  if not (y == 0).any():
    _warn("no negative (OK) samples in y_true: false positive rate is NaN")
    fpr = np.full(fpr.shape, np.nan)
  if not y.any():
    _warn("no positive (NG) samples in y_true: true positive rate is NaN")
    tpr = np.full(tpr.shape, np.nan)
  return fpr, tpr, thr


def roc_auc(y_true: Any, scores: Any) -> float:
  """`sklearn.metrics.roc_auc_score` (ties count half); NaN with a warning if a class is absent."""
  y, s = _binary_inputs(y_true, scores)
  if not y.size:
    raise ValueError("y_true is empty")
  if y.all() or not y.any():
    _warn("ROC AUC is undefined with only one class in y_true: returning NaN")
    return math.nan
  return float(skm.roc_auc_score(y, s))


def precision_recall_curve(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(precision, recall, thresholds) of `sklearn.metrics.precision_recall_curve` (drop_intermediate=False).

  Recall decreases along the arrays; the last point is (recall 0, precision 1) with no threshold. With no
  positives recall is NaN (scikit-learn sets it to 1 instead).
  """
  y, s = _binary_inputs(y_true, scores)
  if not y.size:
    raise ValueError("y_true is empty")
  precision, recall, thr = _sklearn_quiet(skm.precision_recall_curve, y, s)
  if not y.any():
    _warn("no positive (NG) samples in y_true: recall is NaN")
    recall = np.r_[np.full(recall.size - 1, np.nan), 0.0]
  return precision, recall, thr


def average_precision(y_true: Any, scores: Any) -> float:
  """`sklearn.metrics.average_precision_score`, sum_k (R_k - R_{k-1}) P_k; NaN with a warning when there is no
  positive sample (scikit-learn returns 0 there)."""
  y, s = _binary_inputs(y_true, scores)
  if not y.size:
    raise ValueError("y_true is empty")
  if not y.any():
    _warn("average precision is undefined without positive (NG) samples: returning NaN")
    return math.nan
  return float(skm.average_precision_score(y, s))


# ----------------------------------------------------------------------------------------------------
# Operating threshold


def threshold_for_recall(y_true: Any, scores: Any, target_recall: float = 0.98) -> float:
  """Highest threshold t whose NG recall on (y_true, scores) is >= target_recall.

  Decision rule: predict NG when score >= t. t is always one of the NG samples' scores: the k-th highest,
  with k the fewest NG that must be caught (smallest k with k / n_NG >= target). Every threshold above t
  catches fewer than k, so t is the highest; samples tied at t are all flagged, so the recall reached can
  exceed the target. target_recall = 0 gives +inf (flag nothing). NaN with a warning when y_true has no NG.
  """
  y, s = _binary_inputs(y_true, scores)
  if not 0.0 <= target_recall <= 1.0:
    raise ValueError(f"target_recall must be in [0, 1], got {target_recall}")
  pos = np.sort(s[y == 1])[::-1]
  n_pos = pos.size
  if n_pos == 0:
    _warn("no positive (NG) samples: recall is undefined, threshold is NaN")
    return math.nan
  k = _fewest_to_catch(n_pos, target_recall)
  return math.inf if k == 0 else float(pos[k - 1])


def apply_threshold(scores: Any, threshold: float) -> np.ndarray:
  """int64 predictions, 1 (NG) where score >= threshold, else 0 (OK)."""
  s = _scores_1d(scores, "scores")
  if math.isnan(threshold):
    raise ValueError("threshold is NaN")
  return (s >= threshold).astype(np.int64)


def recall_at_threshold(y_true: Any, scores: Any, threshold: float) -> float:
  """NG recall when predicting NG for score >= threshold (NaN if y_true has no NG)."""
  y, s = _binary_inputs(y_true, scores)
  return _ratio(int(np.sum(s[y == 1] >= threshold)), int(np.sum(y == 1)))


# ----------------------------------------------------------------------------------------------------
# Recall-first threshold rules that hold with a handful of validation NG images

THRESHOLD_RULES = ("tolerance", "min_ng", "val_quantile")
# Probabilities are floored at float32's smallest normal number before the logit, so a saturated float32
# probability gives a logit of about ±87 instead of ±inf.
_PROB_FLOOR = float(np.finfo(np.float32).tiny)


def positive_logit(proba: Any, positive: int) -> np.ndarray:
  """Logit of the positive (NG) class, log P(NG) - log(1 - P(NG)), from (N, C) class probabilities.

  1 - P(NG) is summed from the other columns, so probabilities that round to 1.0 in float32 keep their order
  (the other columns hold the small numbers). A monotone map of P(NG): ROC/PR curves and the order-based rules
  are unchanged by it; the `tolerance` rule assumes normal NG scores on this scale.
  """
  arr = np.asarray(proba, dtype=np.float64)
  if arr.ndim != 2 or arr.shape[1] < 2 or not 0 <= positive < arr.shape[1]:
    raise ValueError(f"proba must be (N, C >= 2) with positive in [0, C), got shape {arr.shape}, positive {positive}")
  if np.isnan(arr).any() or arr.min(initial=0.0) < 0.0 or arr.max(initial=0.0) > 1.0 + 1e-6:
    raise ValueError("proba must hold probabilities in [0, 1]")
  rest = np.delete(arr, positive, axis=1).sum(axis=1)
  return np.log(np.maximum(arr[:, positive], _PROB_FLOOR)) - np.log(np.maximum(rest, _PROB_FLOOR))


@functools.lru_cache(maxsize=256)
def tolerance_factor(n: int, target_recall: float, confidence: float) -> float:
  """k of the one-sided normal tolerance bound mean - k·sd of n draws (sample sd, ddof=1).

  With probability `confidence` over the n draws, at least `target_recall` of the normal distribution lies
  above mean - k·sd: k = t'(confidence; n - 1, z·√n) / √n, t' the noncentral t quantile and z the standard
  normal `target_recall` quantile (NIST/SEMATECH e-Handbook 7.2.6.3). +inf for target_recall = 1.
  """
  from scipy import stats  # noqa: PLC0415  (heavy; only the threshold rules need it)

  if int(n) < 2:
    raise ValueError(f"a tolerance bound needs n >= 2 draws, got {n}")
  if not 0.0 < target_recall <= 1.0 or not 0.0 < confidence < 1.0:
    raise ValueError(f"target_recall must be in (0, 1] and confidence in (0, 1), got {target_recall}, {confidence}")
  if target_recall == 1.0:
    return math.inf
  z = float(stats.norm.ppf(target_recall))
  return float(stats.nct.ppf(confidence, int(n) - 1, z * math.sqrt(n)) / math.sqrt(n))


def order_statistic_recall(k: int, n: int, target_recall: float) -> dict[str, float]:
  """What a threshold at the k-th highest of n validation NG scores promises, distribution-free.

  For NG scores exchangeable with (and continuous like) those of future NG images, the true NG recall R at
  that threshold is Beta(k, n - k + 1): E[R] = k / (n + 1) and P(R >= target) = I_{1-target}(n - k + 1, k).
  For the lowest score (k = n): a new NG falls below it with probability 1/(n + 1), P(R >= target) = 1 - target^n.
  """
  from scipy import stats  # noqa: PLC0415

  if not 1 <= k <= n:
    raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
  return {"expected_recall": k / (n + 1), "p_recall_at_target": float(stats.beta.sf(target_recall, k, n - k + 1))}


def choose_threshold(
  y_true: Any,
  scores: Any,
  *,
  rule: str = "tolerance",
  target_recall: float = 0.98,
  confidence: float = 0.95,
  margin: float = 0.0,
) -> dict[str, Any]:
  """A recall-first threshold on validation `scores` (predict NG when score >= value) and what it promises.

  Rules (n = number of validation NG):
    tolerance     mean - k·sd of the NG scores, k = `tolerance_factor(n, target_recall, confidence)`. If the
                  NG scores are normal and the validation NG a random sample of the NG to come, then with
                  probability >= confidence the true NG recall at the threshold is >= target_recall. Parametric:
                  normality is checked (Shapiro-Wilk p-value, n >= 3) and reported, not enforced.
    min_ng        the lowest validation NG score. Distribution-free: a new NG scores below the lowest of n
                  exchangeable NG scores with probability 1/(n + 1); P(recall >= target) = 1 - target^n only.
    val_quantile  the highest threshold with validation NG recall >= target (`threshold_for_recall`, the k-th
                  highest NG score); distribution-free recall ~ Beta(k, n - k + 1), no guarantee at the target.
  `margin` (score units, >= 0) is subtracted from the value; a lower threshold only catches more, so each
  guarantee still holds as a lower bound. With fewer than 2 validation NG the value is NaN, with a note.
  `ng_to_certify` is how many validation NG a distribution-free guarantee at (target, confidence) takes; with
  fewer, a note says so.
  Returns {rule, value, n_ng, ng_to_certify, target_recall, confidence, margin, guarantee, notes, ...rule's own
  numbers}.
  """
  y, s = _binary_inputs(y_true, scores)
  if rule not in THRESHOLD_RULES:
    raise ValueError(f"threshold rule {rule!r}: choose one of {THRESHOLD_RULES}")
  if not 0.0 < target_recall <= 1.0 or not 0.0 < confidence < 1.0 or not margin >= 0.0:
    raise ValueError(
      f"need target_recall in (0, 1], confidence in (0, 1), margin >= 0; got {target_recall}, {confidence}, {margin}"
    )
  ng = np.sort(s[y == 1])[::-1]
  n = int(ng.size)
  out: dict[str, Any] = {
    "rule": rule,
    "value": math.nan,
    "n_ng": n,
    "target_recall": float(target_recall),
    "confidence": float(confidence),
    "margin": float(margin),
    "guarantee": "none: fewer than 2 validation NG",
    "notes": [],
  }
  needed = ng_to_certify(float(target_recall), float(confidence))
  out["ng_to_certify"] = needed
  if needed and n < needed:
    out["notes"].append(
      f"{n} validation NG cannot show {100 * target_recall:g} % NG recall with {100 * confidence:g} % confidence "
      f"without assuming a score distribution: that takes at least {needed} (all caught); with fewer, the "
      f"guarantee rests on rule 'tolerance''s normal model, or is weaker (see it)"
    )
  if n < 2:
    out["notes"].append(f"{n} validation NG: a recall-first threshold needs at least 2; threshold is NaN")
    return out
  if rule == "tolerance":
    _tolerance(out, ng, target_recall, confidence)
  else:
    k = n if rule == "min_ng" else _fewest_to_catch(n, target_recall)
    out["value"] = float(ng[k - 1]) if k else math.inf
    if k:
      dist_free = order_statistic_recall(k, n, target_recall)
      out.update(k=k, **dist_free)
      out["guarantee"] = (
        f"distribution-free ({'lowest' if k == n else f'{k}-th highest'} of {n} validation NG scores): a new NG is "
        f"caught with probability {k}/{n + 1} = {100 * dist_free['expected_recall']:.1f} % on average; "
        f"P(NG recall >= {100 * target_recall:g} %) = {100 * dist_free['p_recall_at_target']:.1f} %"
      )
  out["value"] -= margin
  return out


def ng_to_certify(target_recall: float, confidence: float) -> int:
  """Fewest validation NG with which a threshold at the lowest NG score (rule `min_ng`) guarantees, without any
  assumption on the score distribution, NG recall >= `target_recall` with probability >= `confidence`:
  the smallest n with 1 - target^n >= confidence (149 for 98 % at 95 %). 0 for target_recall = 1 (never)."""
  if not 0.0 < target_recall <= 1.0 or not 0.0 < confidence < 1.0:
    raise ValueError(f"target_recall must be in (0, 1] and confidence in (0, 1), got {target_recall}, {confidence}")
  if target_recall == 1.0:
    return 0
  n = max(1, math.ceil(math.log1p(-confidence) / math.log(target_recall)))
  while n > 1 and 1.0 - target_recall ** (n - 1) >= confidence:  # floating-point safe
    n -= 1
  while 1.0 - target_recall**n < confidence:
    n += 1
  return n


def _fewest_to_catch(n: int, target_recall: float) -> int:
  """Smallest k with k / n >= target (floating-point safe), as `threshold_for_recall`."""
  k = int(math.ceil(target_recall * n))
  while k > 0 and (k - 1) / n >= target_recall:
    k -= 1
  while k < n and k / n < target_recall:
    k += 1
  return k


def _tolerance(out: dict, ng: np.ndarray, target_recall: float, confidence: float) -> None:
  from scipy import stats  # noqa: PLC0415

  n = ng.size
  mean, sd = float(ng.mean()), float(ng.std(ddof=1))
  k = tolerance_factor(n, float(target_recall), float(confidence))
  out.update(mean=mean, sd=sd, k=k, value=-math.inf if math.isinf(k) else mean - k * sd)
  if math.isinf(k):
    out["notes"].append("target recall 1: the tolerance bound is -inf, every image is flagged")
  out["guarantee"] = (
    f"normal tolerance bound: if NG scores are normal and these {n} validation NG a random sample of them, "
    f"P(NG recall >= {100 * target_recall:g} %) >= {100 * confidence:g} %"
  )
  if sd == 0.0:
    out["notes"].append(f"the {n} validation NG scores are all equal: the normal model is degenerate")
  if n >= 3 and sd > 0:
    out["normality_p"] = float(stats.shapiro(ng).pvalue)
    if out["normality_p"] < 0.05:
      out["notes"].append(
        f"validation NG scores look non-normal (Shapiro-Wilk p = {out['normality_p']:.3f}): the tolerance "
        "guarantee rests on normality; rule 'min_ng' states a distribution-free one"
      )


# ----------------------------------------------------------------------------------------------------
# Stratified bootstrap (vectorised: resamples are rows of a multiplicity matrix)


def stratified_bootstrap_weights(labels: Any, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
  """(n_resamples, N) float32 multiplicities of a stratified bootstrap over N images.

  Each resample redraws, with replacement, as many images of every class as the class has, so class sizes
  (prevalence) stay fixed. The same (labels, n_resamples, seed) give the same weights, so one draw can be
  applied to several models' predictions on the same images (paired comparisons, seed averages).
  """
  y = _labels_1d(labels, "labels")
  if int(n_resamples) < 1:
    raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
  b = int(n_resamples)
  rng = np.random.default_rng(seed)
  weights = np.zeros((b, y.size), np.float32)
  offsets = np.arange(b)[:, None]
  for c in np.unique(y):
    members = np.flatnonzero(y == c)
    m = members.size
    draws = rng.integers(0, m, (b, m)) + m * offsets
    weights[:, members] = np.bincount(draws.ravel(), minlength=b * m).reshape(b, m)
  return weights


def bootstrap_rate(weights: np.ndarray, members: Any, hits: Any) -> np.ndarray:
  """(B,) share of `hits` among `members` (boolean masks over the N images) in every resample.

  E.g. NG recall: members = actual NG, hits = flagged NG; overkill: members = actual OK, hits = flagged NG.
  NaN in a resample without members.
  """
  m = np.asarray(members, bool)
  w = np.asarray(weights)[:, m]
  total = w.sum(axis=1, dtype=np.float64)
  hit = w @ np.asarray(hits, np.float32)[m]
  return np.divide(hit, total, out=np.full(total.shape, np.nan), where=total > 0)


def bootstrap_roc_auc(weights: np.ndarray, y_true: Any, scores: Any) -> np.ndarray:
  """(B,) ROC AUC (ties count half) of every resample, from the Mann-Whitney form on weighted counts.

  Cost O(B·N): negatives are sorted once and their resampled multiplicities cumulated. NaN when a class is absent.
  """
  y, s = _binary_inputs(y_true, scores)
  w = np.asarray(weights)
  pos, neg = y == 1, y == 0
  if not pos.any() or not neg.any():
    return np.full(w.shape[0], np.nan)
  order = np.argsort(s[neg], kind="mergesort")
  sneg = s[neg][order]
  cum = np.cumsum(w[:, neg][:, order], axis=1, dtype=np.float64)
  cum = np.concatenate([np.zeros((w.shape[0], 1)), cum], axis=1)
  lo, hi = np.searchsorted(sneg, s[pos], "left"), np.searchsorted(sneg, s[pos], "right")
  below = cum[:, lo] + 0.5 * (cum[:, hi] - cum[:, lo])  # (B, n_pos): weighted negatives under each positive
  wpos = w[:, pos].astype(np.float64)
  return np.sum(wpos * below, axis=1) / (wpos.sum(axis=1) * cum[:, -1])


def percentile_interval(samples: Any, level: float = 0.95) -> tuple[float, float]:
  """(low, high) percentile interval of bootstrap samples, ignoring NaN; (NaN, NaN) when none is finite."""
  x = np.asarray(samples, np.float64)
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}")
  if not np.isfinite(x).any():
    return math.nan, math.nan
  lo, hi = np.nanpercentile(x, [50 * (1 - level), 50 * (1 + level)], axis=0)
  return float(lo), float(hi)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
  """Exact (Clopper-Pearson) binomial interval for k successes in n; stays informative at 0/n or n/n, where a
  percentile bootstrap collapses to a point. (NaN, NaN) for n = 0."""
  from scipy import stats  # noqa: PLC0415

  if n <= 0:
    return math.nan, math.nan
  a = 1.0 - level
  lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
  hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
  return lo, hi


__all__ = [
  "UndefinedMetricWarning",
  "confusion_matrix",
  "binary_counts",
  "binary_report",
  "paper_columns",
  "multiclass_report",
  "acsa",
  "g_mean",
  "macro_f1",
  "roc_curve",
  "roc_auc",
  "precision_recall_curve",
  "average_precision",
  "threshold_for_recall",
  "apply_threshold",
  "recall_at_threshold",
  "THRESHOLD_RULES",
  "positive_logit",
  "tolerance_factor",
  "order_statistic_recall",
  "ng_to_certify",
  "choose_threshold",
  "stratified_bootstrap_weights",
  "bootstrap_rate",
  "bootstrap_roc_auc",
  "percentile_interval",
  "clopper_pearson",
]
