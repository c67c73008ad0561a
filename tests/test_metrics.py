"""deepsmote_jax.metrics against scikit-learn (the reference) and the AMOLED paper's Table 1."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from deepsmote_jax import metrics as M

SEEDS = (0, 1, 2)


def _binary_data(seed: int, n: int = 300, ties: bool = True):
  rng = np.random.default_rng(seed)
  y = (rng.random(n) < 0.3).astype(np.int64)
  s = rng.normal(0.8 * y, 1.0)
  if ties:  # coarse scores: many ties, including ties across classes
    s = np.round(s, 1)
  return y, s


# ----------------------------------------------------------------------------------------------------
# Confusion matrix and counting metrics


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", [2, 3, 5])
def test_confusion_matrix_matches_sklearn(seed, c):
  rng = np.random.default_rng(seed)
  yt, yp = rng.integers(0, c, 200), rng.integers(0, c, 200)
  np.testing.assert_array_equal(M.confusion_matrix(yt, yp, c), skm.confusion_matrix(yt, yp, labels=range(c)))
  # Absent classes still get a row and a column.
  cm = M.confusion_matrix(yt, yp, c + 2)
  assert cm.shape == (c + 2, c + 2) and cm[c:].sum() == 0 and cm[:, c:].sum() == 0


def test_confusion_matrix_rows_are_actual():
  cm = M.confusion_matrix([0, 0, 0, 1], [0, 1, 1, 1], 2)
  np.testing.assert_array_equal(cm, [[1, 2], [0, 1]])


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_report_matches_sklearn(seed):
  rng = np.random.default_rng(seed)
  yt = (rng.random(400) < 0.25).astype(int)
  yp = np.where(rng.random(400) < 0.8, yt, 1 - yt)
  rep = M.binary_report(M.confusion_matrix(yt, yp, 2), positive=1)
  assert rep["recall"] == pytest.approx(skm.recall_score(yt, yp))
  assert rep["precision"] == pytest.approx(skm.precision_score(yt, yp))
  assert rep["f1"] == pytest.approx(skm.f1_score(yt, yp))
  assert rep["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
  assert rep["specificity"] == pytest.approx(skm.recall_score(yt, yp, pos_label=0))
  assert rep["overkill_rate"] == pytest.approx(1 - skm.recall_score(yt, yp, pos_label=0))
  # Leak rate = share of passed panels (predicted OK) that are NG = 1 - NPV.
  assert rep["leak_rate"] == pytest.approx(1 - skm.precision_score(yt, yp, pos_label=0))
  assert rep["miss_rate"] == pytest.approx(1 - rep["recall"])
  assert rep["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(yt, yp))
  assert rep["notes"] == []


def test_binary_report_positive_index_and_counts_mapping():
  cm = np.array([[50, 5], [3, 12]])  # class 1 = NG
  a = M.binary_report(cm, positive=1)
  b = M.binary_report(cm[::-1, ::-1], positive=0)  # same data, NG listed first
  c = M.binary_report({"tp": 12, "fn": 3, "fp": 5, "tn": 50})
  for k in ("recall", "precision", "f1", "leak_rate", "overkill_rate", "accuracy", "specificity"):
    assert a[k] == b[k] == c[k]
  assert (a["tp"], a["fn"], a["fp"], a["tn"]) == (12, 3, 5, 50)
  assert a["leak_rate"] == 3 / 53 and a["overkill_rate"] == 5 / 55


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", [3, 6])
def test_multiclass_report_matches_sklearn(seed, c):
  rng = np.random.default_rng(seed)
  yt = rng.integers(0, c, 500)
  yp = np.where(rng.random(500) < 0.6, yt, rng.integers(0, c, 500))
  rep = M.multiclass_report(M.confusion_matrix(yt, yp, c))
  labels = list(range(c))
  p, r, f, sup = skm.precision_recall_fscore_support(yt, yp, labels=labels, zero_division=np.nan)
  np.testing.assert_allclose(rep["precision"], p)
  np.testing.assert_allclose(rep["recall"], r)
  np.testing.assert_allclose(rep["f1"], f)
  np.testing.assert_array_equal(rep["support"], sup)
  assert rep["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
  assert rep["acsa"] == pytest.approx(skm.balanced_accuracy_score(yt, yp))
  assert rep["macro_f1"] == pytest.approx(skm.f1_score(yt, yp, labels=labels, average="macro"))
  recalls = [np.mean(yp[yt == k] == k) for k in labels]
  assert rep["g_mean"] == pytest.approx(np.prod(recalls) ** (1 / c))
  assert M.acsa(M.confusion_matrix(yt, yp, c)) == pytest.approx(rep["acsa"])
  assert M.g_mean(M.confusion_matrix(yt, yp, c)) == pytest.approx(rep["g_mean"])
  assert M.macro_f1(M.confusion_matrix(yt, yp, c)) == pytest.approx(rep["macro_f1"])


def test_g_mean_is_zero_when_a_class_is_never_recognised():
  cm = np.array([[10, 0, 0], [5, 0, 0], [0, 0, 7]])
  assert M.g_mean(cm) == 0.0
  assert M.acsa(cm) == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------------
# The AMOLED paper's Table 1 (InceptionV3)

INCEPTION_V3 = np.array([[2457, 267], [22, 927]])  # rows actual OK, NG; columns predicted OK, NG


def test_paper_table1_inceptionv3_row():
  pc = M.paper_columns(INCEPTION_V3, ng=1)
  assert round(100 * pc["precision"], 2) == 90.20  # = OK recall 2457/2724
  assert round(100 * pc["recall"], 2) == 99.11  # = 2457/2479 of the panels passed as OK
  assert round(100 * pc["accuracy"], 2) == 92.13
  assert round(100 * pc["f1"], 2) == 94.45  # the paper prints 94.46
  rep = M.binary_report(INCEPTION_V3, positive=1)
  assert round(100 * rep["recall"], 2) == 97.68  # NG catch rate 927/949, the abstract's "98 %"
  assert rep["leak_rate"] == pytest.approx(22 / 2479)
  assert rep["overkill_rate"] == pytest.approx(267 / 2724)
  # paper_columns equals standard metrics with OK as positive, precision and recall swapped.
  ok = M.binary_report(INCEPTION_V3, positive=0)
  assert pc["precision"] == ok["recall"] and pc["recall"] == ok["precision"] and pc["f1"] == pytest.approx(ok["f1"])


# ----------------------------------------------------------------------------------------------------
# Curves


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_and_auc_match_sklearn(seed, ties):
  y, s = _binary_data(seed, ties=ties)
  for drop in (True, False):
    got = M.roc_curve(y, s, drop_intermediate=drop)
    ref = skm.roc_curve(y, s, drop_intermediate=drop)
    for g, r in zip(got, ref):
      np.testing.assert_allclose(g, r)
  assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_pr_curve_and_average_precision_match_sklearn(seed, ties):
  y, s = _binary_data(seed, ties=ties)
  got = M.precision_recall_curve(y, s)
  ref = skm.precision_recall_curve(y, s)
  for g, r in zip(got, ref):
    np.testing.assert_allclose(g, r)
  assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


def test_all_scores_tied():
  y, s = np.array([0, 1, 0, 1, 1]), np.full(5, 0.5)
  assert M.roc_auc(y, s) == pytest.approx(0.5)
  assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s))


# ----------------------------------------------------------------------------------------------------
# Recall-first threshold


def _recall(y, s, t):
  return np.mean(s[y == 1] >= t)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 0.98, 0.99, 1.0])
def test_threshold_for_recall_is_highest_reaching_target(seed, target):
  y, s = _binary_data(seed, n=500, ties=True)
  t = M.threshold_for_recall(y, s, target)
  assert _recall(y, s, t) >= target
  assert M.recall_at_threshold(y, s, t) == _recall(y, s, t)
  # Brute force over every distinct score (recall only changes there): t is the largest that qualifies.
  candidates = np.unique(s)
  ok = [c for c in candidates if _recall(y, s, c) >= target]
  assert t == max(ok)
  assert _recall(y, s, np.nextafter(t, np.inf)) < target
  # Decision rule: score >= t is NG, so samples exactly at t are flagged.
  pred = M.apply_threshold(s, t)
  np.testing.assert_array_equal(pred, (s >= t).astype(int))
  assert pred[s == t].all()
  assert skm.recall_score(y, pred) >= target


def test_threshold_exact_fraction_and_extremes():
  y = np.array([1] * 50 + [0] * 50)
  s = np.r_[np.linspace(1.0, 0.51, 50), np.linspace(0.5, 0.0, 50)]
  # 0.98 * 50 = 49 exactly (floating point gives 49.00000000000001): 49 NG must be caught, not 50.
  assert M.threshold_for_recall(y, s, 0.98) == s[48]
  assert M.threshold_for_recall(y, s, 1.0) == s[49]
  assert M.threshold_for_recall(y, s, 0.0) == math.inf
  assert M.apply_threshold(s, math.inf).sum() == 0
  with pytest.raises(ValueError, match="target_recall"):
    M.threshold_for_recall(y, s, 1.5)


# ----------------------------------------------------------------------------------------------------
# Degenerate cases: NaN with a note, never a crash


def test_binary_report_zero_divisions_are_nan_with_notes():
  rep = M.binary_report({"tp": 0, "fn": 0, "fp": 0, "tn": 10})  # no NG at all, nothing flagged
  assert math.isnan(rep["recall"]) and math.isnan(rep["precision"]) and math.isnan(rep["f1"])
  assert rep["specificity"] == 1.0 and rep["overkill_rate"] == 0.0 and rep["leak_rate"] == 0.0
  assert rep["balanced_accuracy"] == 1.0
  assert any("no actual NG" in n for n in rep["notes"])
  # Same convention as scikit-learn's zero_division=np.nan.
  yt, yp = np.zeros(10, int), np.zeros(10, int)
  assert math.isnan(skm.precision_score(yt, yp, zero_division=np.nan))
  empty = M.binary_report(np.zeros((2, 2), int))
  assert all(math.isnan(empty[k]) for k in ("recall", "precision", "f1", "accuracy", "balanced_accuracy"))


def test_nothing_flagged_precision_nan_f1_zero_like_sklearn():
  yt, yp = np.array([0, 0, 1, 1]), np.zeros(4, int)
  rep = M.binary_report(M.confusion_matrix(yt, yp, 2))
  assert math.isnan(rep["precision"]) and rep["recall"] == 0.0
  assert rep["f1"] == skm.f1_score(yt, yp, zero_division=np.nan) == 0.0
  assert any("nothing flagged" in n for n in rep["notes"])


def test_absent_class_multiclass():
  yt = np.array([0, 0, 1, 1, 0])
  yp = np.array([0, 2, 1, 0, 0])
  cm = M.confusion_matrix(yt, yp, 3)
  rep = M.multiclass_report(cm)
  assert math.isnan(rep["recall"][2]) and rep["f1"][2] == 0.0
  assert rep["notes"]
  with pytest.warns(M.UndefinedMetricWarning):
    value = M.acsa(cm)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    assert value == pytest.approx(skm.balanced_accuracy_score(yt, yp))
  with pytest.warns(M.UndefinedMetricWarning):
    assert M.g_mean(cm) == pytest.approx(math.sqrt(2 / 3 * 1 / 2))
  # A class neither present nor predicted has NaN F1 and is skipped by macro-F1, as in scikit-learn.
  cm4 = M.confusion_matrix(yt, yp, 4)
  with pytest.warns(M.UndefinedMetricWarning):
    mf1 = M.macro_f1(cm4)
  assert mf1 == pytest.approx(skm.f1_score(yt, yp, labels=range(4), average="macro", zero_division=np.nan))


def test_single_class_curves_are_nan_with_warning():
  y, s = np.zeros(6, int), np.linspace(0, 1, 6)
  with pytest.warns(M.UndefinedMetricWarning):
    assert math.isnan(M.roc_auc(y, s))
  with pytest.warns(M.UndefinedMetricWarning):
    assert math.isnan(M.average_precision(y, s))
  with pytest.warns(M.UndefinedMetricWarning):
    assert math.isnan(M.threshold_for_recall(y, s, 0.98))
  with pytest.warns(M.UndefinedMetricWarning):
    assert math.isnan(M.roc_auc(np.ones(6, int), s))


def test_input_errors():
  with pytest.raises(ValueError, match="different lengths"):
    M.confusion_matrix([0, 1], [0, 1, 1], 2)
  with pytest.raises(ValueError, match="outside"):
    M.confusion_matrix([0, 3], [0, 1], 2)
  with pytest.raises(ValueError, match="binary"):
    M.roc_curve([0, 2], [0.1, 0.2])
  with pytest.raises(ValueError, match="scores contains NaN"):
    M.roc_auc([0, 1], [0.1, np.nan])
  with pytest.raises(ValueError, match="2×2"):
    M.binary_report(np.eye(3, dtype=int))


# ----------------------------------------------------------------------------------------------------
# Recall-first threshold rules with a handful of validation NG


def _true_recall(threshold: np.ndarray, mu: float, sigma: float) -> np.ndarray:
  """Share of a normal(mu, sigma) NG score distribution at or above the threshold."""
  from scipy import stats

  return stats.norm.sf((np.asarray(threshold) - mu) / sigma)


def test_tolerance_factor_matches_published_tables():
  # One-sided normal tolerance factors (NIST/SEMATECH e-Handbook 7.2.6.3; Natrella 1963, Table A-7).
  assert M.tolerance_factor(10, 0.90, 0.95) == pytest.approx(2.355, abs=1e-3)
  assert M.tolerance_factor(20, 0.99, 0.95) == pytest.approx(3.295, abs=1e-3)
  assert M.tolerance_factor(8, 0.98, 0.95) > M.tolerance_factor(30, 0.98, 0.95) > 2.054  # -> z_0.98 as n grows
  assert M.tolerance_factor(5, 1.0, 0.95) == math.inf
  with pytest.raises(ValueError, match="n >= 2"):
    M.tolerance_factor(1, 0.98, 0.95)


def test_tolerance_rule_recall_guarantee_holds_in_simulation_and_val_quantile_does_not():
  """2000 validation sets of 8 normal NG logits: the true NG recall at the chosen threshold reaches 98 % in
  >= ~95 % of them for 'tolerance' (its stated confidence); the old highest-threshold rule, here the lowest of
  the 8 scores, only in 1 - 0.98^8 = 15 %."""
  rng = np.random.default_rng(0)
  mu, sigma, n, sets = 2.0, 1.5, 8, 2000
  y = np.r_[np.zeros(20, int), np.ones(n, int)]
  chosen = {rule: np.empty(sets) for rule in M.THRESHOLD_RULES}
  for i in range(sets):
    s = np.r_[rng.normal(-2, 1, 20), rng.normal(mu, sigma, n)]
    for rule in M.THRESHOLD_RULES:
      chosen[rule][i] = M.choose_threshold(y, s, rule=rule, target_recall=0.98, confidence=0.95)["value"]
  reached = {rule: np.mean(_true_recall(t, mu, sigma) >= 0.98) for rule, t in chosen.items()}
  assert 0.93 <= reached["tolerance"] <= 0.97, reached
  assert reached["val_quantile"] < 0.25 and reached["min_ng"] < 0.25, reached
  assert reached["val_quantile"] == pytest.approx(1 - 0.98**n, abs=0.03)  # its distribution-free P(R >= target)
  info = M.choose_threshold(y, s, rule="tolerance")
  assert info["n_ng"] == n and info["k"] == pytest.approx(M.tolerance_factor(n, 0.98, 0.95))
  assert info["value"] == pytest.approx(s[y == 1].mean() - info["k"] * s[y == 1].std(ddof=1))
  assert "P(NG recall >= 98 %) >= 95 %" in info["guarantee"] and 0 <= info["normality_p"] <= 1


def test_min_ng_rule_is_the_lowest_score_with_its_distribution_free_meaning():
  y = np.array([0, 0, 1, 1, 1, 1, 0, 1])
  s = np.array([0.1, 0.5, 2.0, 1.5, 3.0, 0.7, 0.9, 2.5])
  info = M.choose_threshold(y, s, rule="min_ng")
  assert info["value"] == 0.7 and info["k"] == 5 and info["n_ng"] == 5
  assert info["expected_recall"] == pytest.approx(5 / 6)
  assert info["p_recall_at_target"] == pytest.approx(1 - 0.98**5)
  assert "5/6" in info["guarantee"] and "lowest of 5" in info["guarantee"]
  assert M.choose_threshold(y, s, rule="min_ng", margin=0.25)["value"] == pytest.approx(0.45)
  # Distribution-free: with skewed (exponential) NG scores a new NG falls below the lowest of n with
  # probability 1/(n + 1), averaged over validation draws.
  rng = np.random.default_rng(1)
  mins = rng.exponential(size=(4000, 5)).min(axis=1)
  assert np.mean(np.exp(-mins)) == pytest.approx(5 / 6, abs=0.01)  # P(new NG >= min) for Exp(1)
  # Fewer than 2 validation NG: NaN with a note, for every rule; bad settings are errors.
  for rule in M.THRESHOLD_RULES:
    one = M.choose_threshold([0, 0, 1], [0.1, 0.2, 0.9], rule=rule)
    assert math.isnan(one["value"]) and any("at least 2" in note for note in one["notes"])
  with pytest.raises(ValueError, match="choose one of"):
    M.choose_threshold(y, s, rule="argmax")
  with pytest.raises(ValueError, match="margin"):
    M.choose_threshold(y, s, margin=-1.0)


def test_ng_needed_for_a_distribution_free_guarantee():
  """149 validation NG show 98 % recall at 95 % confidence with the lowest-score threshold; 148 do not, and the
  guarantee holds in simulation (uniform scores: the true recall at the lowest of n is 1 - min)."""
  assert M.ng_to_certify(0.98, 0.95) == 149
  assert 1 - 0.98**149 >= 0.95 > 1 - 0.98**148
  assert M.ng_to_certify(0.9, 0.9) == 22 and M.ng_to_certify(1.0, 0.95) == 0
  rng = np.random.default_rng(0)
  recall = 1 - rng.uniform(size=(20000, 149)).min(axis=1)
  assert np.mean(recall >= 0.98) >= 0.95 - 0.005
  few = M.choose_threshold(np.r_[np.zeros(30), np.ones(23)], rng.normal(size=53), rule="tolerance")
  assert few["ng_to_certify"] == 149
  assert any("23 validation NG cannot show 98 % NG recall" in note and "at least 149" in note for note in few["notes"])
  enough = M.choose_threshold(np.r_[np.zeros(30), np.ones(150)], rng.normal(size=180), rule="min_ng")
  assert not any("cannot show" in note for note in enough["notes"])
  assert enough["p_recall_at_target"] >= 0.95


def test_tolerance_rule_degenerate_cases_are_noted():
  y = np.array([0, 1, 1, 1])
  equal = M.choose_threshold(y, [0.0, 2.0, 2.0, 2.0])
  assert equal["value"] == 2.0 and any("all equal" in n for n in equal["notes"])
  everything = M.choose_threshold(y, [0.0, 1.0, 2.0, 3.0], target_recall=1.0)
  assert everything["value"] == -math.inf and any("every image" in n for n in everything["notes"])
  skewed = M.choose_threshold(np.ones(12, int), np.r_[np.zeros(11), 50.0])
  assert skewed["normality_p"] < 0.05 and any("non-normal" in n for n in skewed["notes"])


def test_positive_logit_keeps_order_where_float32_probabilities_saturate():
  logits = np.array([[0.0, 20.0], [0.0, 25.0], [0.0, 30.0], [3.0, 0.0]])
  p32 = np.exp(logits - logits.max(1, keepdims=True)).astype(np.float32)
  p32 /= p32.sum(1, keepdims=True)
  assert p32[0, 1] == p32[1, 1] == p32[2, 1] == 1.0  # P(NG) saturates ...
  z = M.positive_logit(p32, 1)
  np.testing.assert_allclose(z, logits[:, 1] - logits[:, 0], rtol=1e-5)  # ... its logit does not
  three = np.array([[0.2, 0.3, 0.5]])
  assert M.positive_logit(three, 2)[0] == pytest.approx(0.0)  # one-vs-rest: 0.5 against 0.2 + 0.3
  with pytest.raises(ValueError, match="probabilities"):
    M.positive_logit(np.array([[-1.0, 2.0]]), 1)


# ----------------------------------------------------------------------------------------------------
# Stratified bootstrap


def test_bootstrap_weights_are_stratified_and_deterministic():
  y = np.array([0] * 7 + [1] * 3 + [2] * 5)
  w = M.stratified_bootstrap_weights(y, 500, seed=3)
  assert w.shape == (500, 15) and w.dtype == np.float32
  for c, n in ((0, 7), (1, 3), (2, 5)):
    np.testing.assert_array_equal(w[:, y == c].sum(axis=1), n)  # class sizes kept in every resample
  np.testing.assert_array_equal(w, M.stratified_bootstrap_weights(y, 500, seed=3))
  assert not np.array_equal(w, M.stratified_bootstrap_weights(y, 500, seed=4))
  assert np.mean(w) == pytest.approx(1.0) and w.std() > 0.5  # multiplicities ~ Poisson(1)


def test_bootstrap_roc_auc_and_rate_match_the_resampled_sets():
  y, s = _binary_data(5)  # ties within and across classes
  w = M.stratified_bootstrap_weights(y, 20, seed=0)
  aucs = M.bootstrap_roc_auc(w, y, s)
  flagged = s >= 0.5
  recalls = M.bootstrap_rate(w, y == 1, flagged)
  for b in range(0, 20, 4):
    idx = np.repeat(np.arange(y.size), w[b].astype(int))
    assert aucs[b] == pytest.approx(skm.roc_auc_score(y[idx], s[idx]))
    assert recalls[b] == pytest.approx(skm.recall_score(y[idx], flagged[idx]))
  assert M.bootstrap_roc_auc(np.ones((1, y.size)), y, s)[0] == pytest.approx(skm.roc_auc_score(y, s))
  assert np.isnan(M.bootstrap_roc_auc(w[:, y == 0], y[y == 0], s[y == 0])).all()


def test_bootstrap_intervals_cover_the_true_value_in_simulation():
  """Percentile intervals of NG recall (true 85 %) and ROC AUC (true Φ(1/√2)) cover the truth in ~95 % of
  300 simulated test sets of 40 NG / 120 OK."""
  from scipy import stats

  rng = np.random.default_rng(0)
  true_auc = stats.norm.cdf(1 / math.sqrt(2))
  y = np.r_[np.zeros(120, int), np.ones(40, int)]
  cover_recall = cover_auc = 0
  trials = 300
  for t in range(trials):
    s = rng.normal(y.astype(float), 1.0)
    caught = rng.random(y.size) < 0.85
    w = M.stratified_bootstrap_weights(y, 500, seed=t)
    lo, hi = M.percentile_interval(M.bootstrap_rate(w, y == 1, caught))
    cover_recall += lo <= 0.85 <= hi
    lo, hi = M.percentile_interval(M.bootstrap_roc_auc(w, y, s))
    cover_auc += lo <= true_auc <= hi
  assert cover_recall / trials >= 0.88 and cover_auc / trials >= 0.88, (cover_recall, cover_auc)
  assert cover_recall / trials <= 0.99 and cover_auc / trials <= 0.99  # intervals are not trivially wide


def test_percentile_interval_and_clopper_pearson():
  assert M.percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
  assert all(math.isnan(v) for v in M.percentile_interval(np.full(10, np.nan)))
  from scipy import stats

  for k, n in ((0, 10), (7, 10), (10, 10), (3, 8)):
    ref = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    assert M.clopper_pearson(k, n) == pytest.approx((ref.low, ref.high))
  assert all(math.isnan(v) for v in M.clopper_pearson(0, 0))
