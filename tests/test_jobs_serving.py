"""Deployable exports: StableHLO (jax.export) and SavedModel (jax2tf) reload and agree with the JAX model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepsmote_jax.export import export_classifier
from deepsmote_jax.jobs import predict as predict_job
from deepsmote_jax.jobs import serving
from deepsmote_jax.models.classifiers import build_classifier
from deepsmote_jax.train.classifier import predict_proba


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
  root = tmp_path_factory.mktemp("serving")
  model = build_classifier("small_cnn", 2, in_channels=1, seed=2)
  export_classifier(
    model, root / "model", name="small_cnn", class_names=["NG", "OK"], image_size=32, in_channels=1, extra={"step": 7}
  )
  predict_job.save_decision(
    root / "model",
    "NG",
    {"rule": "min_ng", "value_score": 0.25, "value": 0.562, "scale": "logit", "target_recall": 0.98},
  )
  return model, root


def test_stablehlo_roundtrip_any_batch_and_model_card(classifier):
  model, root = classifier
  record = serving.export_serving(root / "model", root / "served", savedmodel=False)
  assert record["checked_max_abs_diff"]["stablehlo"] <= serving.CHECK_ATOL
  predict, info = serving.load_serving(root / "served")
  assert info["class_names"] == ["NG", "OK"] and info["threshold"]["rule"] == "min_ng"
  for n in (1, 5):  # the batch size is symbolic
    x = np.random.default_rng(n).integers(0, 256, (n, 32, 32, 1), dtype=np.uint8)
    np.testing.assert_allclose(predict(x), predict_proba(model, x, in_channels=1), atol=1e-6)
  card = (root / "served" / "MODEL_CARD.md").read_text()
  assert "P(NG) >= 0.562" in card and "(batch, 32, 32, 1)" in card and '"step": 7' in card
  assert json.loads((root / "served" / "serving.json").read_text())["platforms"] == ["cpu", "cuda"]
  with pytest.raises(ValueError, match="exists"):
    serving.export_serving(root / "model", root / "served", savedmodel=False)
  assert not list(root.glob(".served.tmp-*"))


def test_savedmodel_roundtrip(classifier):
  tf = pytest.importorskip("tensorflow")
  model, root = classifier
  record = serving.export_serving(root / "model", root / "saved", savedmodel=True)
  assert record["checked_max_abs_diff"]["saved_model"] <= serving.CHECK_ATOL
  loaded = tf.saved_model.load(str(root / "saved" / "saved_model"))
  x = np.random.default_rng(9).integers(0, 256, (4, 32, 32, 1), dtype=np.uint8)
  out = next(iter(loaded.signatures["serving_default"](images=tf.constant(x)).values())).numpy()
  np.testing.assert_allclose(out, predict_proba(model, x, in_channels=1), atol=1e-6)


def test_not_a_serving_folder_is_named(tmp_path):
  (tmp_path / "serving.json").write_text(json.dumps({"format": "other"}))
  with pytest.raises(ValueError, match="not a serving export"):
    serving.load_serving(tmp_path)
