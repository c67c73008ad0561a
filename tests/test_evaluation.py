"""deepsmote_jax.evaluation: files written, numbers consistent with the confusion matrix, paper layout."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from deepsmote_jax import evaluation as E
from deepsmote_jax import metrics as M

NAMES = ["OK", "NG"]
FILES = ("metrics.json", "report.md", "confusion_matrix.png", "pr_curve.png", "roc_curve.png")


def _probs(y: np.ndarray, c: int, seed: int, sep: float = 1.5) -> np.ndarray:
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(y.size, c))
  logits[np.arange(y.size), y] += sep
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def _binary_set(seed: int, n_ok: int = 300, n_ng: int = 100):
  y = np.r_[np.zeros(n_ok, int), np.ones(n_ng, int)]
  return y, _probs(y, 2, seed)


def _strict_json(path):
  def no_constants(name):
    raise AssertionError(f"non-standard JSON constant {name}")

  with open(path) as f:
    return json.loads(f.read(), parse_constant=no_constants)


def _inception_v3_set():
  """Samples whose argmax confusion matrix is the paper's InceptionV3 row."""
  cm = [[2457, 267], [22, 927]]
  y, pred = [], []
  for a in range(2):
    for p in range(2):
      y += [a] * cm[a][p]
      pred += [p] * cm[a][p]
  y, pred = np.array(y), np.array(pred)
  p_ng = np.where(pred == 1, 0.75, 0.25) + np.linspace(-0.2, 0.2, y.size)
  return y, np.stack([1 - p_ng, p_ng], axis=1)


def test_evaluate_binary_writes_files_and_numbers_recompute(tmp_path):
  y, s = _binary_set(0)
  vy, vs = _binary_set(1)
  res = E.evaluate(
    y,
    s,
    NAMES,
    val_true=vy,
    val_scores=vs,
    target_recall=0.95,
    threshold_rule="val_quantile",
    out_dir=tmp_path,
    title="toy",
  )
  for name in FILES:
    assert (tmp_path / name).stat().st_size > 0, name
  for name in FILES[2:]:
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  js = _strict_json(tmp_path / "metrics.json")
  cm = np.array(js["confusion_matrix"])
  np.testing.assert_array_equal(cm, skm.confusion_matrix(y, s.argmax(1)))
  (tn, fp), (fn, tp) = cm
  b = js["binary"]
  assert (b["tp"], b["fn"], b["fp"], b["tn"]) == (tp, fn, fp, tn)
  assert js["accuracy"] == pytest.approx((tp + tn) / cm.sum())
  assert b["recall"] == pytest.approx(tp / (tp + fn))
  assert b["precision"] == pytest.approx(tp / (tp + fp))
  assert b["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
  assert b["leak_rate"] == pytest.approx(fn / (fn + tn))
  assert b["overkill_rate"] == pytest.approx(fp / (fp + tn))
  assert b["specificity"] == pytest.approx(tn / (tn + fp))
  assert js["acsa"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
  assert js["g_mean"] == pytest.approx(math.sqrt(tp / (tp + fn) * tn / (tn + fp)))
  assert js["macro_f1"] == pytest.approx(skm.f1_score(y, s.argmax(1), average="macro"))
  pc = js["paper_columns"]
  assert pc["precision"] == pytest.approx(tn / (tn + fp)) and pc["recall"] == pytest.approx(tn / (tn + fn))
  assert js["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s[:, 1]))
  assert js["average_precision"] == pytest.approx(skm.average_precision_score(y, s[:, 1]))
  assert js["curves"]["NG"]["roc"]["thresholds"][0] is None  # +inf is written as null

  t = js["threshold"]
  # Thresholds live on the logit of P(NG); the order (hence this rule's choice) is that of P(NG).
  assert t["rule"] == "val_quantile" and t["scale"] == "logit"
  assert t["value_score"] == M.threshold_for_recall(vy, M.positive_logit(vs, 1), 0.95)
  assert t["value"] == pytest.approx(M.threshold_for_recall(vy, vs[:, 1], 0.95))
  assert t["val_recall"] >= 0.95 and t["val_n_positive"] == 100 and "Beta" not in t["guarantee"]
  tpred = (M.positive_logit(s, 1) >= t["value_score"]).astype(int)
  np.testing.assert_array_equal(t["confusion_matrix"], skm.confusion_matrix(y, tpred))
  assert t["test"]["recall"] == pytest.approx(skm.recall_score(y, tpred))
  assert t["test"]["precision"] == pytest.approx(skm.precision_score(y, tpred))
  assert t["test"]["overkill_rate"] == pytest.approx(1 - skm.recall_score(y, tpred, pos_label=0))
  assert t["test"]["leak_rate"] == pytest.approx(1 - skm.precision_score(y, tpred, pos_label=0))
  # The returned dict and the file hold the same numbers.
  assert res["binary"]["recall"] == b["recall"] and res["threshold"]["value"] == t["value"]

  md = (tmp_path / "report.md").read_text()
  header = "| Model | Actual | Predicted OK | Predicted NG | Accuracy (%) | Precision* (%) | Recall* (%) | F1* (%) |"
  assert header in md
  assert f"| toy | OK | {tn} | {fp} |" in md and f"|  | NG | {fn} | {tp} |" in md
  for row in ("NG recall (catch rate)", "Leak rate", "Overkill rate", "Recall-first threshold"):
    assert row in md


def test_paper_table1_inceptionv3_through_evaluate(tmp_path):
  y, s = _inception_v3_set()
  res = E.evaluate(y, s, NAMES, title="InceptionV3", out_dir=tmp_path)
  assert res["confusion_matrix"] == [[2457, 267], [22, 927]]
  md = (tmp_path / "report.md").read_text()
  assert "| InceptionV3 | OK | 2457 | 267 | 92.13 | 90.20 | 99.11 | 94.45 |" in md
  assert "|  | NG | 22 | 927 |" in md
  assert "| NG recall (catch rate) | 97.68 | 927/949 |" in md
  assert "| Leak rate | 0.89 | 22/2479 |" in md
  assert "| Overkill rate | 9.80 | 267/2724 |" in md


def test_ng_listed_first_gives_same_numbers():
  y, s = _binary_set(3)
  vy, vs = _binary_set(4)
  a = E.evaluate(y, s, ["OK", "NG"], val_true=vy, val_scores=vs)
  b = E.evaluate(1 - y, s[:, ::-1], ["NG", "OK"], val_true=1 - vy, val_scores=vs[:, ::-1])
  for k in ("recall", "precision", "leak_rate", "overkill_rate", "f1"):
    assert a["binary"][k] == b["binary"][k]
    assert a["threshold"]["test"][k] == b["threshold"]["test"][k]
  assert a["paper_columns"] == b["paper_columns"]
  assert a["threshold"]["confusion_matrix"] == np.asarray(b["threshold"]["confusion_matrix"])[::-1, ::-1].tolist()
  assert a["roc_auc"] == b["roc_auc"]


def test_string_labels_accepted():
  y, s = _binary_set(5)
  a = E.evaluate(y, s, NAMES)
  b = E.evaluate(np.array(NAMES)[y], s, NAMES)
  assert a["confusion_matrix"] == b["confusion_matrix"]


def test_evaluate_multiclass(tmp_path):
  names = ["OK", "scratch", "dent", "NG"]
  rng = np.random.default_rng(7)
  y = rng.integers(0, 4, 400)
  s = _probs(y, 4, 8, sep=1.0)
  res = E.evaluate(y, s, names, positive_class="NG", out_dir=tmp_path, title="multi")
  pred = s.argmax(1)
  assert res["acsa"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
  assert res["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
  recalls = skm.recall_score(y, pred, average=None)
  assert res["g_mean"] == pytest.approx(np.prod(recalls) ** 0.25)
  assert res["roc_auc_ovr_macro"] == pytest.approx(skm.roc_auc_score(y, s, multi_class="ovr", average="macro"))
  # NG one-vs-rest.
  assert res["binary"]["recall"] == pytest.approx(skm.recall_score(y == 3, pred == 3))
  assert res["binary"]["precision"] == pytest.approx(skm.precision_score(y == 3, pred == 3))
  assert res["paper_columns"] is None
  for name in FILES:
    assert (tmp_path / name).stat().st_size > 0
  md = (tmp_path / "report.md").read_text()
  assert "| Actual \\ Predicted | OK | scratch | dent | NG | Total |" in md
  assert f"| Accuracy (4 classes) | {100 * np.mean(pred == y):.2f} |" in md
  assert "| NG-vs-rest accuracy |" in md
  for row in ("## Per class", "ACSA", "G-mean", "Macro-F1", "| scratch |"):
    assert row in md
  # Without a positive class: per-class metrics and one curve per class.
  res2 = E.evaluate(y, s, names, positive_class=None)
  assert res2["binary"] is None and set(res2["curves"]) == set(names)


def test_degenerate_test_set_without_ng(tmp_path):
  y = np.zeros(20, int)
  s = _probs(y, 2, 9)
  vy, vs = _binary_set(10, 20, 10)
  res = E.evaluate(y, s, NAMES, val_true=vy, val_scores=vs, out_dir=tmp_path)
  assert math.isnan(res["binary"]["recall"]) and math.isnan(res["roc_auc"])
  assert res["notes"]
  js = _strict_json(tmp_path / "metrics.json")
  assert js["binary"]["recall"] is None and js["roc_auc"] is None
  assert (tmp_path / "roc_curve.png").stat().st_size > 0
  assert "## Notes" in (tmp_path / "report.md").read_text()


def test_degenerate_validation_without_ng():
  y, s = _binary_set(11)
  res = E.evaluate(y, s, NAMES, val_true=np.zeros(5, int), val_scores=_probs(np.zeros(5, int), 2, 12))
  assert math.isnan(res["threshold"]["value"]) and res["threshold"]["test"] is None
  assert any("0 validation NG" in n for n in res["notes"])
  assert "ng_recall_at_threshold" not in res["intervals"] and "ng_recall" in res["intervals"]
  # One validation NG is not enough for any rule either: NaN with a note, no crash.
  vy = np.r_[np.zeros(5, int), 1]
  for rule in M.THRESHOLD_RULES:
    one = E.evaluate(y, s, NAMES, val_true=vy, val_scores=_probs(vy, 2, 12), threshold_rule=rule)
    assert math.isnan(one["threshold"]["value"]) and any("1 validation NG" in n for n in one["notes"])


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(y_true=np.zeros(5, int)), "y_true and scores have different lengths"),
    (dict(scores=np.full(10, 0.5)), r"scores must be an \(N, C\)"),
    (dict(class_names=["OK", "NG", "X"]), "class_names"),
    (dict(positive_class="defect"), "positive_class"),
    (dict(scores=np.where(np.eye(10, 2) > 0, np.nan, 0.5)), "scores contains NaN"),
    (dict(val_true=np.zeros(4, int)), "val_scores"),
    (dict(val_true=np.zeros(4, int), val_scores=np.full((4, 2), np.nan)), "val_scores contains NaN"),
    (dict(val_true=np.zeros(3, int), val_scores=np.full((4, 2), 0.5)), "val_true and val_scores"),
    (dict(y_true=np.array(["OK"] * 9 + ["bad"])), "y_true has labels not in class_names"),
    (dict(y_true=np.r_[np.zeros(9, int), 2]), "y_true has class indices outside"),
    (dict(target_recall=0.0), "target_recall"),
    (dict(threshold_rule="highest"), "threshold_rule='highest': choose one of"),
    (dict(threshold_confidence=1.0), "threshold_confidence"),
    (dict(threshold_margin=-0.5), "threshold_margin"),
    (dict(bootstrap=-1), "bootstrap"),
  ],
)
def test_evaluate_input_errors(kwargs, match):
  args = dict(y_true=np.r_[np.zeros(5, int), np.ones(5, int)], scores=np.full((10, 2), 0.5), class_names=NAMES)
  args.update(kwargs)
  y, s, c = args.pop("y_true"), args.pop("scores"), args.pop("class_names")
  with pytest.raises(ValueError, match=match):
    E.evaluate(y, s, c, **args)


def test_compare_table():
  results = {
    "baseline": {"accuracy": 0.5553, "binary": {"recall": 0.5}},
    "DeepSMOTE": {"accuracy": [0.90, 0.92], "binary": {"recall": [0.97, 0.99]}},
    "seeds as dicts": [{"accuracy": 0.90}, {"accuracy": 0.92}],
  }
  md = E.compare_table(results)
  lines = md.splitlines()
  assert lines[0] == "| Model | Accuracy (%) | NG recall (%) |"
  assert "| baseline | 55.53 | 50.00 |" in lines
  assert "| DeepSMOTE | 91.00 ± 1.41 | 98.00 ± 1.41 |" in lines
  assert "| seeds as dicts | 91.00 ± 1.41 | – |" in lines
  assert "mean ± sample std" in md
  assert "| baseline | 0.5553 |" in E.compare_table(results, ["accuracy"], percent=False, digits=4)
  # evaluate() outputs compare directly.
  y, s = _binary_set(13)
  md2 = E.compare_table({"a": E.evaluate(y, s, NAMES), "b": E.evaluate(y, s[:, ::-1], NAMES)})
  assert "NG recall" in md2 and "Leak rate" in md2 and "ROC AUC" in md2
  with pytest.raises(ValueError):
    E.compare_table({})


def _few_ng_validation(seed: int, n_ng: int = 8):
  y = np.r_[np.zeros(60, int), np.ones(n_ng, int)]
  return y, _probs(y, 2, seed)


def test_threshold_rule_is_recorded_beside_the_argmax_decision(tmp_path):
  """The rule, its settings, the number of validation NG it used and its guarantee travel with the result;
  the argmax decision stays where it was; the tolerance rule sits below the lowest validation NG score."""
  y, s = _binary_set(20, 200, 40)
  vy, vs = _few_ng_validation(21)
  res = E.evaluate(y, s, NAMES, val_true=vy, val_scores=vs, out_dir=tmp_path, title="few NG")
  t = res["threshold"]
  assert (t["rule"], t["target_recall"], t["confidence"], t["margin"]) == ("tolerance", 0.98, 0.95, 0.0)
  assert t["val_n_positive"] == 8 and t["val_n"] == 68 and "normal tolerance bound" in t["guarantee"]
  v_logit = M.positive_logit(vs, 1)[vy == 1]
  k = M.tolerance_factor(8, 0.98, 0.95)
  assert t["details"]["k"] == pytest.approx(k)
  assert t["value_score"] == pytest.approx(v_logit.mean() - k * v_logit.std(ddof=1))
  assert t["value_score"] < v_logit.min() and t["val_recall"] == 1.0
  v_ok = M.positive_logit(vs, 1)[vy == 0]
  assert t["val_overkill"] == pytest.approx(np.mean(v_ok >= t["value_score"]))
  assert (t["val_overkill"] >= 0.5) == any("cannot promise" in n for n in res["notes"])
  vy3, vs3 = _few_ng_validation(26, n_ng=3)  # 3 NG: the 95 % bound lies below nearly every OK score
  few = E.evaluate(y, s, NAMES, val_true=vy3, val_scores=vs3, bootstrap=0)
  assert few["threshold"]["val_overkill"] > 0.5 and any("cannot promise" in n for n in few["notes"])
  assert t["value"] == pytest.approx(1 / (1 + np.exp(-t["value_score"])))
  flagged = M.positive_logit(s, 1) >= t["value_score"]
  assert t["test"]["tp"] == int(np.sum(flagged & (y == 1))) and t["test"]["fp"] == int(np.sum(flagged & (y == 0)))
  assert res["binary"]["recall"] == pytest.approx(skm.recall_score(y, s.argmax(1)))  # argmax beside it
  mins = E.evaluate(y, s, NAMES, val_true=vy, val_scores=vs, threshold_rule="min_ng", threshold_margin=0.5)
  assert mins["threshold"]["value_score"] == pytest.approx(v_logit.min() - 0.5)
  assert mins["threshold"]["details"]["expected_recall"] == pytest.approx(8 / 9)
  md = (tmp_path / "report.md").read_text()
  for text in (
    "rule `tolerance`",
    t["guarantee"],
    "caveat:",
    "## Decisions side by side",
    "| argmax |",
    "| threshold (tolerance) |",
    "needed to show the target recall without a distributional assumption: 149 (validation has 8; 141 short",
  ):
    assert text in md, text


def test_every_threshold_rule_is_applied_beside_the_configured_one():
  y, s = _binary_set(20, 200, 40)
  vy, vs = _few_ng_validation(21)
  res = E.evaluate(y, s, NAMES, val_true=vy, val_scores=vs, threshold_rule="min_ng", bootstrap=0)
  rules = res["threshold_rules"]
  assert list(rules) == list(M.THRESHOLD_RULES)
  # The configured rule's row is the result's threshold, with the same test decisions.
  t = res["threshold"]
  assert rules["min_ng"]["threshold"] == t["value_score"] and rules["min_ng"]["val_overkill"] == t["val_overkill"]
  assert rules["min_ng"]["test_recall"] == pytest.approx(t["test"]["recall"])
  assert rules["min_ng"]["test_overkill"] == pytest.approx(t["test"]["overkill_rate"])
  # Each rule's test numbers recomputed from its threshold on the test logits.
  test_logit, v_logit = M.positive_logit(s, 1), M.positive_logit(vs, 1)
  for rule, row in rules.items():
    flagged = test_logit >= row["threshold"]
    assert row["test_recall"] == pytest.approx(flagged[y == 1].mean()), rule
    assert row["test_overkill"] == pytest.approx(flagged[y == 0].mean()), rule
    assert row["val_recall"] == pytest.approx(np.mean(v_logit[vy == 1] >= row["threshold"])), rule
  # The three are ordered as their promises: tolerance (8 NG, 98 % at 95 %) <= lowest NG <= the 98 % quantile.
  assert rules["tolerance"]["threshold"] <= rules["min_ng"]["threshold"] <= rules["val_quantile"]["threshold"]
  assert rules["min_ng"]["threshold"] == pytest.approx(v_logit[vy == 1].min())
  # No validation NG: no threshold, NaN rows.
  none = E.evaluate(y, s, NAMES, val_true=np.zeros(10, int), val_scores=np.tile([0.9, 0.1], (10, 1)), bootstrap=0)
  assert all(math.isnan(r["test_recall"]) for r in none["threshold_rules"].values())


def test_bootstrap_intervals_in_the_result_are_seeded_and_consistent():
  y, s = _binary_set(22, 150, 30)
  vy, vs = _few_ng_validation(23)
  a = E.evaluate(y, s, NAMES, val_true=vy, val_scores=vs, bootstrap=400, bootstrap_seed=1)
  b = E.evaluate(y, s, NAMES, val_true=vy, val_scores=vs, bootstrap=400, bootstrap_seed=1)
  c = E.evaluate(y, s, NAMES, val_true=vy, val_scores=vs, bootstrap=400, bootstrap_seed=2)
  iv = a["intervals"]
  assert iv == b["intervals"] and iv["roc_auc"] != c["intervals"]["roc_auc"]
  assert iv["n_resamples"] == 400 and iv["level"] == 0.95
  pairs = {
    "ng_recall": a["binary"]["recall"],
    "overkill_rate": a["binary"]["overkill_rate"],
    "ng_recall_at_threshold": a["threshold"]["test"]["recall"],
    "overkill_at_threshold": a["threshold"]["test"]["overkill_rate"],
    "roc_auc": a["roc_auc"],
    "acsa": a["acsa"],
  }
  for key, point in pairs.items():
    e = iv[key]
    assert e["value"] == pytest.approx(point) and e["low"] <= point <= e["high"], key
    if key not in ("roc_auc", "acsa"):
      assert e["exact_low"] <= point <= e["exact_high"], key
  assert E.evaluate(y, s, NAMES, bootstrap=0)["intervals"] is None
  # One-vs-rest beyond two classes: recall of the positive class against all others.
  names = ["OK", "scratch", "NG"]
  y3 = np.r_[np.zeros(60, int), np.ones(30, int), np.full(20, 2)]
  r3 = E.evaluate(y3, _probs(y3, 3, 24), names, val_true=y3, val_scores=_probs(y3, 3, 25), bootstrap=200)
  assert r3["intervals"]["ng_recall"]["value"] == pytest.approx(r3["binary"]["recall"])
  assert r3["intervals"]["ng_recall_at_threshold"]["value"] == pytest.approx(r3["threshold"]["test"]["recall"])


def test_threshold_settings_name_the_config_key():
  good = dict(target_recall=0.98, threshold_rule="min_ng", threshold_confidence=0.9, threshold_margin=0.0)
  good.update(bootstrap=10, bootstrap_seed=0)
  assert E.threshold_settings(good)["threshold_rule"] == "min_ng"
  for bad, match in (
    (dict(threshold_rule="quantile"), r"config.pipeline.threshold_rule='quantile': choose one of"),
    (dict(threshold_confidence=0.0), r"config.pipeline.threshold_confidence must be in"),
    (dict(bootstrap="many"), r"config.pipeline.bootstrap='many' must be an integer"),
    (dict(target_recall=1.5), r"config.pipeline.target_recall must be in"),
  ):
    with pytest.raises(ValueError, match=match):
      E.threshold_settings({**good, **bad})
  with pytest.raises(ValueError, match="config.pipeline.bootstrap_seed is missing"):
    E.threshold_settings({k: v for k, v in good.items() if k != "bootstrap_seed"})
