"""Synthetic-image quality metrics on cases whose answers are known: copies, one repeated image, a far-away set."""

from __future__ import annotations

import numpy as np
import pytest

from deepsmote_jax import synthetic_quality as sq


def _real(n=30, d=6, seed=0):
  return np.random.default_rng(seed).normal(size=(n, d))


def test_copies_of_training_images_are_all_memorised_with_precision_one():
  rng = np.random.default_rng(1)
  real_u8 = rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
  copies = real_u8[rng.integers(0, 20, 12)]
  feats = _real(20)
  summary, per_image = sq.assess(sq.unit_pixels(real_u8), sq.unit_pixels(copies), feats, feats[[0, 3, 5, 7, 9, 11]])
  assert summary["memorised_share"] == 1.0 and per_image["memorised"].all()
  assert summary["nearest_rms"]["median"] == 0.0 and np.all(per_image["distance"] == 0.0)
  assert summary["precision"] == 1.0
  # and the nearest real image found is the copied one
  np.testing.assert_array_equal(real_u8[per_image["nearest"]], copies)


def test_memorisation_threshold_is_the_quantile_of_real_leave_one_out_distances():
  real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])  # leave-one-out nearest distances 1, 1, 1, 1, 7
  mem = sq.memorisation(np.array([[4.0], [11.5], [2.5]]), real, quantile=0.05)
  assert mem["threshold"] == pytest.approx(1.0) and mem["real_loo_median"] == pytest.approx(1.0)
  np.testing.assert_allclose(mem["distance"], [1.0, 1.5, 0.5])
  assert mem["memorised"].tolist() == [True, False, True]
  with pytest.raises(ValueError, match="quantile"):
    sq.memorisation(real, real, quantile=2)


def test_a_single_repeated_image_is_flagged_as_collapsed_with_zero_recall():
  real = _real()
  one = np.repeat(real.mean(axis=0, keepdims=True), 15, axis=0)
  pr = sq.precision_recall(real, one)
  assert pr["recall"] == 0.0
  col = sq.collapse(real, one, recall=pr["recall"])
  assert col["collapsed"] and col["diversity_ratio"] == 0.0 and len(col["reasons"]) == 2


def test_a_far_away_set_has_zero_precision_and_a_matching_set_scores_high():
  real = _real(200, seed=0)
  far = _real(100, seed=1) + 50.0
  pr = sq.precision_recall(real, far)
  assert pr["precision"] == 0.0 and pr["recall"] == 0.0
  same = _real(200, seed=2)  # an independent sample of the same distribution
  pr = sq.precision_recall(real, same, k=3)
  assert pr["precision"] > 0.7 and pr["recall"] > 0.7, pr
  col = sq.collapse(real, same, recall=pr["recall"])
  assert not col["collapsed"] and col["diversity_ratio"] == pytest.approx(1.0, abs=0.1)


def test_knn_radii_and_distances_are_exact():
  x = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 1.0]])
  np.testing.assert_allclose(sq.pairwise_distances(x, x)[0], [0, 5, 10, 1])
  np.testing.assert_allclose(sq.knn_radii(x, 1), [1, 4.242640687, 5, 1])
  np.testing.assert_allclose(sq.knn_radii(x, 2), [5, 5, 9.219544457, 4.242640687])
  assert sq.mean_pairwise_distance(np.zeros((3, 2))) == 0.0


def test_share_called_counts_argmax_hits():
  proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9], [0.5, 0.5]])
  assert sq.share_called(proba, 1) == 0.5  # a tie goes to the first class, as argmax
  assert np.isnan(sq.share_called(np.zeros((0, 2)), 1))
