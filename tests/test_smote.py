"""Latent SMOTE (`deepsmote_jax.smote`) against scikit-learn / imbalanced-learn on small CPU data."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE
from scipy import stats
from sklearn.neighbors import NearestNeighbors

from deepsmote_jax import smote


def _three_classes(seed=0, dim=8, sizes=(120, 40, 25)):
  """Overlapping Gaussian blobs (so Borderline/ADASYN have points in danger), float32 values."""
  rng = np.random.default_rng(seed)
  centers = [np.zeros(dim), np.full(dim, 0.6), np.full(dim, -0.6)]
  X = np.concatenate([rng.normal(c, 1.0, size=(n, dim)) for c, n in zip(centers, sizes)])
  y = np.repeat(np.arange(len(sizes)), sizes)
  # float32 values held in float64, so JAX (float32) and imblearn (float64) see identical points.
  return X.astype(np.float32).astype(np.float64), y


def _sklearn_knn(x, k):
  nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
  dist, idx = nn.kneighbors(x)
  return dist[:, 1:], idx[:, 1:]


# ---------------------------------------------------------------------------------------------------------
# Nearest neighbours.


@pytest.mark.parametrize("block_size", [1024, 64, 37, 8, (16, 64), (64, 8), (37, 200)])
def test_knn_equals_sklearn_for_any_block_size(block_size):
  """Indices equal NearestNeighbors exactly; 37 and 64 do not divide n = 203 (padded, masked rows); a pair sets
  the query and the reference tile apart."""
  x = np.random.default_rng(1).normal(size=(203, 24)).astype(np.float32)
  ref_dist, ref_idx = _sklearn_knn(x.astype(np.float64), 5)
  dist, idx = smote.nearest_neighbors(x, 5, block_size=block_size)
  np.testing.assert_array_equal(np.asarray(idx), ref_idx)
  np.testing.assert_allclose(np.asarray(dist), ref_dist, rtol=1e-5, atol=1e-5)


def test_fit_resample_draw_does_not_depend_on_the_tiles():
  rng = np.random.default_rng(5)
  X = rng.normal(size=(120, 8)).astype(np.float32)
  y = np.array([0] * 90 + [1] * 30)
  key = jax.random.key(3)
  one = smote.fit_resample(key, X, y, block_size=16, return_provenance=True)
  pair = smote.fit_resample(key, X, y, block_size=(8, 64), return_provenance=True)
  np.testing.assert_array_equal(np.asarray(one.neighbor), np.asarray(pair.neighbor))
  np.testing.assert_array_equal(np.asarray(one.samples), np.asarray(pair.samples))


@pytest.mark.parametrize("bad", [0, (8, 0), (8,), (8, 8, 8), (8, 2.5)])
def test_bad_tile_size_is_refused(bad):
  x = np.zeros((20, 3), np.float32)
  with pytest.raises(ValueError, match="block_size"):
    smote.nearest_neighbors(x, 2, block_size=bad)


def test_knn_without_self_exclusion_and_against_another_set():
  rng = np.random.default_rng(2)
  reference = rng.normal(size=(150, 10)).astype(np.float32)
  query = rng.normal(size=(33, 10)).astype(np.float32)
  fitted = NearestNeighbors(n_neighbors=4).fit(reference.astype(np.float64))
  # Within one set, no exclusion: each point is its own first neighbour (as sklearn's kneighbors(X)).
  _, idx = smote.nearest_neighbors(reference, 4, exclude_self=False, block_size=40)
  np.testing.assert_array_equal(np.asarray(idx), fitted.kneighbors(reference.astype(np.float64))[1])
  # A separate query set.
  _, idx = smote.nearest_neighbors(query, 4, reference=reference, block_size=16)
  np.testing.assert_array_equal(np.asarray(idx), fitted.kneighbors(query.astype(np.float64))[1])
  # Query rows that are members of the reference set skip themselves by index.
  rows = np.arange(10, 150, 7)
  _, idx = smote.nearest_neighbors(reference[rows], 3, reference=reference, self_index=rows)
  np.testing.assert_array_equal(np.asarray(idx), fitted.kneighbors(reference[rows].astype(np.float64))[1][:, 1:])


def test_knn_duplicates_are_neighbours_and_ties_go_to_lower_index():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(50, 6)).astype(np.float32)
  x = np.concatenate([x, x[[4, 17]]])  # rows 50, 51 are exact twins of 4, 17
  _, idx = smote.nearest_neighbors(x, 3, block_size=16)
  idx = np.asarray(idx)
  for a, b in [(4, 50), (17, 51)]:
    assert idx[a, 0] == b and idx[b, 0] == a
  # Integer points on a line: exact, many tied distances; order must be (distance, index).
  line = np.arange(0, 40, dtype=np.float32)[np.random.default_rng(4).permutation(40)][:, None]
  line = np.concatenate([line, line[:5]])  # plus duplicates
  dist, idx = smote.nearest_neighbors(line, 4, block_size=8)
  d2 = (line - line.T) ** 2
  np.fill_diagonal(d2, np.inf)
  expected = np.stack([np.lexsort((np.arange(len(line)), row))[:4] for row in d2])
  np.testing.assert_array_equal(np.asarray(idx), expected)
  np.testing.assert_allclose(np.asarray(dist), np.sqrt(np.take_along_axis(d2, expected, 1)))


def test_knn_rejects_too_many_neighbours():
  with pytest.raises(ValueError, match="k=5 neighbours asked but only 4"):
    smote.nearest_neighbors(np.zeros((5, 2), np.float32), 5)


# ---------------------------------------------------------------------------------------------------------
# The SMOTE draw.


def test_smote_samples_distribution():
  """Base uniform (chi-square), neighbour slot uniform (chi-square), gap ~ U[0, 1) (KS)."""
  x = np.random.default_rng(5).normal(size=(40, 4)).astype(np.float32)
  n = 40_000
  _, nn = smote.nearest_neighbors(x, 5)
  draw = smote.smote_samples(jax.random.key(0), x, n, 5)
  base, neighbor, gap = (np.asarray(a) for a in (draw.base, draw.neighbor, draw.gap))
  assert stats.chisquare(np.bincount(base, minlength=40)).pvalue > 1e-3
  slot = np.argmax(np.asarray(nn)[base] == neighbor[:, None], axis=1)
  assert (np.asarray(nn)[base, slot] == neighbor).all()
  assert stats.chisquare(np.bincount(slot, minlength=5)).pvalue > 1e-3
  assert gap.min() >= 0 and gap.max() < 1
  assert stats.kstest(gap, "uniform").pvalue > 1e-3
  np.testing.assert_allclose(np.asarray(draw.samples), x[base] + gap[:, None] * (x[neighbor] - x[base]), atol=1e-6)


def test_smote_samples_weights_reproducibility_and_jit():
  x = np.random.default_rng(6).normal(size=(30, 3)).astype(np.float32)
  weights = np.zeros(30, np.float32)
  weights[[0, 7, 29]] = [1.0, 2.0, 1.0]
  draw = smote.smote_samples(jax.random.key(1), x, 4000, base_weights=weights)
  counts = np.bincount(np.asarray(draw.base), minlength=30)
  assert set(np.flatnonzero(counts)) == {0, 7, 29}
  assert stats.chisquare(counts[[0, 7, 29]], [1000, 2000, 1000]).pvalue > 1e-3
  a = smote.smote_samples(jax.random.key(2), x, 50)
  b = smote.smote_samples(jax.random.key(2), x, 50)
  c = smote.smote_samples(jax.random.key(3), x, 50)
  np.testing.assert_array_equal(np.asarray(a.samples), np.asarray(b.samples))
  assert not np.allclose(np.asarray(a.samples), np.asarray(c.samples))
  jitted = jax.jit(smote.smote_samples, static_argnames=("n_samples", "k"))
  d = jitted(jax.random.key(2), jnp.asarray(x), n_samples=50, k=5)
  np.testing.assert_allclose(np.asarray(d.samples), np.asarray(a.samples), atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Sampling targets and per-class counts against imbalanced-learn.


def _as_dict(d):
  return {int(c): int(n) for c, n in d.items()}


STRATEGIES = [
  "auto",
  "not majority",
  "minority",
  "not minority",
  "all",
  {1: 90, 2: 25},
  {0: 130, 1: 40, 2: 200},
  lambda y: {1: int((y == 0).sum()), 2: 60},
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=range(len(STRATEGIES)))
def test_sampling_targets_and_counts_equal_imblearn(strategy):
  X, y = _three_classes()
  reference = SMOTE(sampling_strategy=strategy, random_state=0)
  _, y_ref = reference.fit_resample(X, y)
  counts = dict(collections.Counter(y.tolist()))
  assert smote.sampling_targets(counts, strategy, y=y) == _as_dict(reference.sampling_strategy_)
  X_all, y_all = smote.fit_resample(jax.random.key(0), X, y, sampling_strategy=strategy)
  assert X_all.shape == (len(y_ref), X.shape[1])
  assert collections.Counter(y_all.tolist()) == collections.Counter(y_ref.tolist())


def test_default_result_is_originals_then_synthetic_as_imblearn():
  X, y = _three_classes(seed=3)
  X_res, y_res = smote.fit_resample(jax.random.key(2), X, y)
  record = smote.fit_resample(jax.random.key(2), X, y, return_provenance=True)
  assert isinstance(record, smote.Resampled)
  np.testing.assert_allclose(np.asarray(X_res[: len(X)]), X.astype(np.float32))
  np.testing.assert_array_equal(y_res[: len(y)], y)
  np.testing.assert_array_equal(np.asarray(X_res[len(X) :]), np.asarray(record.samples))
  np.testing.assert_array_equal(y_res[len(y) :], record.labels)
  _, y_ref = SMOTE(random_state=0).fit_resample(X, y)
  assert collections.Counter(y_res.tolist()) == collections.Counter(y_ref.tolist())


@pytest.mark.parametrize("ratio", [0.5, 0.75, 1.0])
def test_float_strategy_equals_imblearn(ratio):
  X, y = _three_classes(sizes=(100, 30))
  reference = SMOTE(sampling_strategy=ratio, random_state=0).fit(X, y)
  assert smote.sampling_targets({0: 100, 1: 30}, ratio) == _as_dict(reference.sampling_strategy_)


def test_strategy_errors():
  counts = {0: 100, 1: 30, 2: 20}
  with pytest.raises(ValueError, match="class.*7"):
    smote.sampling_targets(counts, {1: 50, 7: 10})
  with pytest.raises(ValueError, match="10 samples of class 1, fewer than the 30"):
    smote.sampling_targets(counts, {1: 10})
  with pytest.raises(ValueError, match="only defined for 2 classes"):
    smote.sampling_targets(counts, 0.5)
  with pytest.raises(ValueError, match="class 1, not more than the 30"):
    smote.sampling_targets({0: 100, 1: 30}, 0.2)
  with pytest.raises(ValueError, match="majority"):
    smote.sampling_targets(counts, "majority")
  with pytest.raises(ValueError, match="at least 2 classes"):
    smote.sampling_targets({0: 5}, "auto")


# ---------------------------------------------------------------------------------------------------------
# fit_resample: provenance, geometry, variants.


def _on_segment(samples, a, b, atol=1e-4):
  """Each sample lies on segment [a, b]: |s-a| + |s-b| == |a-b|."""
  lengths = np.linalg.norm(samples - a, axis=1) + np.linalg.norm(samples - b, axis=1) - np.linalg.norm(a - b, axis=1)
  return np.abs(lengths) <= atol


def test_smote_provenance_and_geometry():
  X, y = _three_classes(seed=7)
  result = smote.fit_resample(jax.random.key(4), X, y, return_provenance=True)
  samples = np.asarray(result.samples)
  assert result.counts() == {1: 80, 2: 95}
  np.testing.assert_array_equal(y[result.base], result.labels)
  np.testing.assert_array_equal(y[result.neighbor], result.labels)
  assert ((result.gap >= 0) & (result.gap < 1)).all()
  np.testing.assert_allclose(
    samples, X[result.base] + result.gap[:, None] * (X[result.neighbor] - X[result.base]), atol=1e-5
  )
  assert _on_segment(samples, X[result.base], X[result.neighbor]).all()
  # The neighbour is one of the base's 5 nearest same-class points (sklearn, on the class alone).
  for c in (1, 2):
    rows = np.flatnonzero(y == c)
    _, knn = _sklearn_knn(X[rows], 5)
    mine = result.labels == c
    local_base = np.searchsorted(rows, result.base[mine])
    local_nbr = np.searchsorted(rows, result.neighbor[mine])
    assert (knn[local_base] == local_nbr[:, None]).any(axis=1).all()
  # Same key: same rows; another key: other rows.
  again = smote.fit_resample(jax.random.key(4), X, y, return_provenance=True)
  np.testing.assert_array_equal(np.asarray(again.samples), samples)
  other = smote.fit_resample(jax.random.key(5), X, y, return_provenance=True)
  assert not np.array_equal(other.base, result.base)


@pytest.mark.parametrize("kind", ["smote", "borderline-2"])
def test_memory_of_a_class_of_a_million_codes_is_linear(kind):
  """XLA's own accounting of one class's compiled k-NN + draw (compiled, not run) for 1,000,000 codes of 32
  dimensions and as many synthetic rows: arguments + outputs + temporaries stay within a few copies of the
  codes, nowhere near an n x n matrix (4 TB) or an n x block one (4 GB), and grow like n."""
  d, k, n_majority = 32, 5, 16

  def peak_bytes(n):
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    static = dict(n_samples=smote._draw_size(n), k=k, block_size=1024, precision=jax.lax.Precision.HIGHEST)
    if kind == "smote":
      lowered = smote._smote_class.lower(jax.random.key(0), x, None, **static)
    else:
      X = jax.ShapeDtypeStruct((n + n_majority, d), jnp.float32)
      rows = jax.ShapeDtypeStruct((n,), jnp.int32)
      flags = jax.ShapeDtypeStruct((n + n_majority,), jnp.bool_)
      weights = jax.ShapeDtypeStruct((n,), jnp.float32)
      lowered = smote._borderline2_class.lower(jax.random.key(0), x, X, rows, flags, weights, **static)
    m = lowered.compile().memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes

  small, large = peak_bytes(100_000), peak_bytes(1_000_000)
  per_row = 4 * (d + k)  # one code and its neighbour indices
  assert large < 8 * 1_000_000 * per_row + 64 * 2**20
  assert large / small < 12  # an n x n term would make it 100


@pytest.mark.parametrize("kind", ["borderline-1", "borderline-2"])
def test_borderline_danger_set_equals_imblearn(kind):
  X, y = _three_classes(seed=8)
  reference = BorderlineSMOTE(kind=kind, random_state=0)
  _, y_ref = reference.fit_resample(X, y)
  result = smote.fit_resample(jax.random.key(0), X, y, kind=kind, return_provenance=True)
  assert set(result.danger) == set(reference.in_danger_indices)
  for c, rows in reference.in_danger_indices.items():
    np.testing.assert_array_equal(result.danger[c], rows)
  assert collections.Counter(result.concatenate(X, y)[1].tolist()) == collections.Counter(y_ref.tolist())
  # Bases are danger points of the class; the neighbour is among its k nearest (within the class for
  # kind 1, among all classes for kind 2); the sample lies on the segment.
  for c in result.danger:
    assert np.isin(result.base[result.labels == c], result.danger[c]).all()
  samples = np.asarray(result.samples)
  assert _on_segment(samples, X[result.base], X[result.neighbor]).all()
  if kind == "borderline-1":
    np.testing.assert_array_equal(y[result.neighbor], result.labels)
  else:
    _, knn = NearestNeighbors(n_neighbors=6).fit(X).kneighbors(X)
    assert (knn[result.base, 1:] == result.neighbor[:, None]).any(axis=1).all()
    other = y[result.neighbor] != result.labels
    assert other.any() and (result.gap[other] < 0.5).all()


def test_adasyn_counts_equal_imblearn():
  X, y = _three_classes(seed=9)
  _, y_ref = ADASYN(random_state=0).fit_resample(X, y)
  result = smote.fit_resample(jax.random.key(0), X, y, kind="adasyn", return_provenance=True)
  ref_new = collections.Counter(y_ref.tolist()) - collections.Counter(y.tolist())
  assert result.counts() == dict(ref_new)
  assert _on_segment(np.asarray(result.samples), X[result.base], X[result.neighbor]).all()
  np.testing.assert_array_equal(y[result.neighbor], result.labels)


# ---------------------------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_errors_and_warnings():
  X, y = _three_classes(sizes=(30, 10, 4))
  with pytest.warns(UserWarning, match=r"class 2 has 4 samples, fewer than k_neighbors \+ 1 = 6; using k = 3"):
    result = smote.fit_resample(jax.random.key(0), X, y, return_provenance=True)
  assert result.k_used == {1: 5, 2: 3} and result.counts() == {1: 20, 2: 26}
  with pytest.raises(ValueError, match="class 2 has 4 samples"):
    smote.fit_resample(jax.random.key(0), X, y, strict=True)
  y_single = y.copy()
  y_single[-3:] = 1  # class 2 keeps one sample
  with pytest.raises(ValueError, match="class 2 has a single sample"):
    smote.fit_resample(jax.random.key(0), X, y_single)
  X_bad = X.copy()
  X_bad[[31, 33], 0] = np.nan
  X_bad[41, 2] = np.inf
  with pytest.raises(ValueError, match=r"class 1: 2 row\(s\), class 2: 1 row\(s\)"):
    smote.fit_resample(jax.random.key(0), X_bad, y)
  with pytest.raises(ValueError, match=r"class\(es\) \[5\]"):
    smote.fit_resample(jax.random.key(0), X, y, sampling_strategy={5: 40})
  with pytest.raises(ValueError, match="fewer than the 10"):
    smote.fit_resample(jax.random.key(0), X, y, sampling_strategy={1: 5})
  with pytest.raises(ValueError, match="kind must be one of"):
    smote.fit_resample(jax.random.key(0), X, y, kind="svm")
