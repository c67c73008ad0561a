"""The DeepSMOTE sampler: imbalanced-learn's shape on image arrays, determinism, estimator protocol, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from deepsmote_jax import DeepSMOTE

# One xdist worker runs this module (`--dist loadgroup`), so its module-scoped fixture is built once.
pytestmark = pytest.mark.xdist_group("sampler")

FAST = dict(preset="micro_16", epochs=2, batch_size=8, penalty_sample_size=4, random_state=3)


def _imbalanced(n_ok=24, n_ng=6, seed=0):
  """Two classes of 16x16 grayscale images: bright-left 'ok' and bright-right 'ng' (string labels)."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 60, (n_ok + n_ng, 16, 16, 1))
  x[:n_ok, :, :8] += 150
  x[n_ok:, :, 8:] += 150
  y = np.array(["ok"] * n_ok + ["ng"] * n_ng)
  return x.astype(np.uint8), y


@pytest.fixture(scope="module")
def resampled():
  X, y = _imbalanced()
  sampler = DeepSMOTE(**FAST)
  X_res, y_res = sampler.fit_resample(X, y)
  return sampler, X, y, X_res, y_res


def test_fit_resample_returns_originals_then_balanced_synthetic(resampled):
  sampler, X, y, X_res, y_res = resampled
  assert X_res.dtype == np.uint8 and X_res.shape == (48, 16, 16, 1)
  np.testing.assert_array_equal(X_res[: len(X)], X)
  np.testing.assert_array_equal(y_res[: len(y)], y)
  assert set(y_res[len(y) :]) == {"ng"}  # 'auto': the minority up to the majority's count
  assert (y_res == "ng").sum() == (y_res == "ok").sum() == 24
  assert sampler.classes_.tolist() == ["ng", "ok"]
  assert sampler.training_summary_["final_step"] > 0
  # Provenance of every synthetic row points at an original 'ng' image.
  assert np.all(y[sampler.resampled_.base] == "ng") and np.all(y[sampler.resampled_.neighbor] == "ng")


def test_same_seed_same_images_other_seed_other_images(resampled):
  _, X, y, X_res, _ = resampled
  again, _ = DeepSMOTE(**FAST).fit_resample(X, y)
  np.testing.assert_array_equal(again, X_res)
  other, _ = DeepSMOTE(**{**FAST, "random_state": 4}).fit_resample(X, y)
  assert not np.array_equal(other[len(X) :], X_res[len(X) :])


def test_residual_synthesis_keeps_the_originals_and_moves_from_each_base(resampled):
  """synthesis='residual' reuses the trained model: each synthetic image is its base image plus a decoded
  change (closer to its base than the decoded image is); a bad value fails before training."""
  sampler, X, y, X_res, _ = resampled
  residual = DeepSMOTE(**FAST, synthesis="residual")
  residual.autoencoder_, residual.classes_ = sampler.autoencoder_, sampler.classes_
  R_res, r_y = residual.resample(X, y)
  np.testing.assert_array_equal(R_res[: len(X)], X)
  base = X[residual.resampled_.base].astype(float)
  from_base = np.abs(R_res[len(X) :] - base).mean()
  assert 0 < from_base < np.abs(X_res[len(X) :] - base).mean()
  with pytest.raises(ValueError, match="synthesis='blend': choose one of"):
    DeepSMOTE(**FAST, synthesis="blend").fit(X, y)


def test_estimator_protocol_and_strategy():
  sampler = DeepSMOTE(**FAST, sampling_strategy={"ng": 10})
  copy = clone(sampler)
  assert copy.get_params() == sampler.get_params() and copy is not sampler
  X, y = _imbalanced()
  X_res, y_res = copy.set_params(epochs=1).fit_resample(X, y)
  assert (y_res == "ng").sum() == 10 and len(X_res) == len(X) + 4


def test_inside_an_imblearn_pipeline():
  imblearn_pipeline = pytest.importorskip("imblearn.pipeline")
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import FunctionTransformer

  X, y = _imbalanced()
  flatten = FunctionTransformer(lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0)
  pipe = imblearn_pipeline.Pipeline(
    [("deepsmote", DeepSMOTE(**FAST)), ("flatten", flatten), ("clf", LogisticRegression(max_iter=200))]
  )
  pipe.fit(X, y)
  assert pipe.named_steps["clf"].classes_.tolist() == ["ng", "ok"]
  # Sampling happens during fit only: predict sees the test images as they are.
  assert (pipe.predict(X) == y).mean() > 0.9
  assert (pipe.named_steps["deepsmote"].resampled_.labels == "ng").sum() == 18


@pytest.mark.parametrize(
  "X_shape, dtype, match",
  [((30, 32, 32, 1), np.uint8, "preset 'micro_16' takes"), ((30, 16, 16, 1), np.float32, "must be uint8")],
)
def test_bad_images_are_named(X_shape, dtype, match):
  _, y = _imbalanced()
  with pytest.raises(ValueError, match=match):
    DeepSMOTE(**FAST).fit(np.zeros(X_shape, dtype), y)


def test_resample_before_fit_and_unknown_class(resampled):
  sampler, X, y, _, _ = resampled
  with pytest.raises(ValueError, match="not fitted"):
    DeepSMOTE(**FAST).resample(X, y)
  with pytest.raises(ValueError, match=r"never saw"):
    sampler.resample(X, np.where(y == "ng", "scratch", y))
  with pytest.raises(ValueError, match="at least 2 classes"):
    DeepSMOTE(**FAST).fit(X, np.full(len(X), "ok"))
