"""The one-class baseline: an OK-only encoder/decoder whose reconstruction error scores defects."""

from __future__ import annotations

import numpy as np
import pytest
from test_jobs_pipeline import _write_images, tiny_config

from deepsmote_jax import evaluation
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.jobs import anomaly, prepare_data


def test_error_to_proba_is_monotone_and_flags_above_the_ok_quantile():
  rng = np.random.default_rng(0)
  ok_val = rng.lognormal(-5, 0.3, 200)
  errors = np.sort(rng.lognormal(-4.5, 0.6, 300))
  proba = anomaly.error_to_proba(errors, ok_val, ["NG", "OK", "other"], ok="OK", ng="NG")
  assert proba.shape == (300, 3)
  assert np.all(np.diff(proba[:, 0]) >= 0)  # rank-preserving: curves see the raw ranking
  np.testing.assert_allclose(proba[:, 0] + proba[:, 1], 1.0, rtol=1e-6)
  assert np.all(proba[:, 2] == 0)
  flagged = proba.argmax(1) == 0
  np.testing.assert_array_equal(flagged, errors > np.quantile(ok_val, anomaly.OK_QUANTILE))
  # The validation OK images themselves: the argmax decision flags about 1 - OK_QUANTILE of them.
  ok_flag = anomaly.error_to_proba(ok_val, ok_val, ["NG", "OK"], ok="OK", ng="NG").argmax(1) == 0
  assert abs(ok_flag.mean() - (1 - anomaly.OK_QUANTILE)) < 0.02
  with pytest.raises(ValueError, match="validation 'OK'"):
    anomaly.error_to_proba(errors, ok_val[:1], ["NG", "OK"], ok="OK", ng="NG")


def test_ok_only_set_keeps_only_ok_images():
  images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4, 1)
  s = ImageSet(images, np.array([0, 1, 1, 0, 1, 0], np.int32), ["NG", "OK"], [f"f{i}" for i in range(6)])
  ok = anomaly.ok_only(s, "OK")
  assert ok.class_names == ["OK"] and ok.files == ["f1", "f2", "f4"]
  np.testing.assert_array_equal(ok.images, images[[1, 2, 4]])
  with pytest.raises(ValueError, match="config.imbalance.ok_class='good'"):
    anomaly.ok_only(s, "good")


@pytest.mark.slow
def test_one_class_run_scores_dents_above_ok_and_is_evaluated_like_a_classifier(tmp_path):
  config = tiny_config(_write_images(tmp_path / "images", counts=(("NG", 12), ("OK", 48))))
  config.train.epochs = 6
  config.imbalance.ok_class = "OK"
  work = tmp_path / "run"
  prepare_data.run(config, work / "data")
  info = anomaly.train_one(config, work, "anomaly_ae", 0, work / "classifiers" / "anomaly_ae_seed0", progress=False)
  assert info["train_counts"] == {"OK": int((prepare_data.load_split(work / "data", "train").labels == 1).sum())}
  pred = np.load(work / "classifiers" / "anomaly_ae_seed0" / "predictions.npz", allow_pickle=True)
  names = list(pred["class_names"])
  ng = names.index("NG")
  # A dark dent is not in any OK image: it reconstructs worse than the OK texture.
  test_err, labels = pred["test_error"], pred["test_labels"]
  assert test_err[labels == ng].mean() > test_err[labels != ng].mean()
  result = evaluation.evaluate(
    pred["test_labels"],
    pred["test_proba"],
    names,
    positive_class="NG",
    val_true=pred["val_labels"],
    val_scores=pred["val_proba"],
  )
  assert result["roc_auc"] > 0.75, result["roc_auc"]
