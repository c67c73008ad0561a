"""How good synthetic images are: memorised, faithful, diverse, and recognised -- pure NumPy metrics.

* Memorisation: each synthetic image's distance to its nearest real training image of the same class (RMS
  pixel difference on [0, 1] images). Rule: a synthetic image is *memorised* when that distance is at or
  below the `quantile` (default 5 %) of the real images' leave-one-out nearest-neighbour distances, i.e. it
  sits closer to a real image than 95 % of the real images sit to each other. Exact copies always qualify.
* Fidelity and coverage: k-NN precision and recall (Kynkaanniemi et al., "Improved precision and recall
  metric for assessing generative models", NeurIPS 2019) in a feature space: each set's manifold is the
  union of balls around its points with radius the distance to their k-th nearest neighbour (k = 3);
  precision = share of synthetic points inside the real manifold, recall = share of real points inside the
  synthetic manifold.
* Collapse: a near-constant synthetic set -- mean pairwise feature distance below `diversity_floor`
  (10 %) of the real set's, or k-NN recall below `recall_floor` (0.05: the synthetic set covers no real
  image). A collapsed set adds copies of (almost) one image, whatever its count says.
* Recognition: the share of synthetic images of a class that a classifier trained on real images only
  assigns to that class (for NG: the share it calls NG).
"""

from __future__ import annotations

import numpy as np

MEMORISATION_QUANTILE = 0.05
K = 3
DIVERSITY_FLOOR = 0.1
RECALL_FLOOR = 0.05
_CHUNK = 512  # rows per block of a distance matrix


def unit_pixels(images_u8: np.ndarray) -> np.ndarray:
  """uint8 (N, H, W, C) -> float64 (N, H*W*C) in [0, 1]."""
  images_u8 = np.asarray(images_u8)
  return images_u8.reshape(len(images_u8), -1).astype(np.float64) / 255.0


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Euclidean distances (len(a), len(b)) in float64, by blocks.

  The dot-product form leaves rounding of order 1e-16 * |a|^2 where two rows are equal; squared distances
  below 1e-10 of |a|^2 + |b|^2 are set to exactly 0, so copies are at distance 0.
  """
  a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
  nb = np.einsum("ij,ij->i", b, b)
  out = np.empty((len(a), len(b)))
  for i in range(0, len(a), _CHUNK):
    block = a[i : i + _CHUNK]
    na = np.einsum("ij,ij->i", block, block)[:, None]
    sq = na + nb[None, :] - 2.0 * block @ b.T
    sq[sq <= 1e-10 * (na + nb[None, :])] = 0.0
    out[i : i + _CHUNK] = np.sqrt(sq)
  return out


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
  """Each row's distance to its k-th nearest other row (k is capped at len(x) - 1)."""
  d = pairwise_distances(x, x)
  np.fill_diagonal(d, np.inf)
  k = min(k, len(x) - 1)
  if k < 1:
    raise ValueError(f"k-NN radii need at least 2 points, got {len(x)}")
  return np.partition(d, k - 1, axis=1)[:, k - 1]


def nearest(synthetic: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(distance, index) of each synthetic row's nearest real row."""
  d = pairwise_distances(synthetic, real)
  idx = np.argmin(d, axis=1)
  return d[np.arange(len(d)), idx], idx


def memorisation(synthetic: np.ndarray, real: np.ndarray, *, quantile: float = MEMORISATION_QUANTILE) -> dict:
  """Nearest-real distances of the synthetic rows and the memorised flags (see the module docstring).

  With a single real row there are no leave-one-out distances: only exact copies count as memorised.
  """
  if not 0 <= quantile <= 1:
    raise ValueError(f"quantile must be in [0, 1], got {quantile}")
  dist, idx = nearest(synthetic, real)
  if len(real) >= 2:
    loo = pairwise_distances(real, real)
    np.fill_diagonal(loo, np.inf)
    loo = loo.min(axis=1)
    threshold = float(np.quantile(loo, quantile))
  else:
    loo, threshold = np.zeros(0), 0.0
  return {
    "distance": dist,
    "nearest": idx,
    "memorised": dist <= threshold,
    "threshold": threshold,
    "real_loo_median": float(np.median(loo)) if len(loo) else None,
  }


def precision_recall(real: np.ndarray, synthetic: np.ndarray, *, k: int = K) -> dict:
  """k-NN precision and recall of synthetic against real features (NaN where a set has < 2 points)."""
  if len(real) < 2 or len(synthetic) < 2:
    return {"precision": float("nan"), "recall": float("nan"), "k": k}
  d = pairwise_distances(synthetic, real)  # (S, R)
  real_radius, synth_radius = knn_radii(real, k), knn_radii(synthetic, k)
  precision = np.mean(np.any(d <= real_radius[None, :], axis=1))
  recall = np.mean(np.any(d <= synth_radius[:, None], axis=0))
  return {"precision": float(precision), "recall": float(recall), "k": min(k, len(real) - 1, len(synthetic) - 1)}


def mean_pairwise_distance(x: np.ndarray) -> float:
  """Mean distance over distinct pairs of rows (NaN below 2 rows)."""
  if len(x) < 2:
    return float("nan")
  d = pairwise_distances(x, x)
  return float(d.sum() / (len(x) * (len(x) - 1)))


def collapse(
  real: np.ndarray,
  synthetic: np.ndarray,
  *,
  recall: float | None = None,
  diversity_floor: float = DIVERSITY_FLOOR,
  recall_floor: float = RECALL_FLOOR,
) -> dict:
  """Whether the synthetic set is near-constant: {'collapsed', 'reasons', 'diversity_ratio'}."""
  real_spread = mean_pairwise_distance(real)
  synth_spread = 0.0 if len(synthetic) < 2 else mean_pairwise_distance(synthetic)
  ratio = synth_spread / real_spread if real_spread > 0 else float("nan")
  reasons = []
  if len(synthetic) < 2:
    reasons.append(f"only {len(synthetic)} synthetic image(s)")
  elif ratio < diversity_floor:
    reasons.append(f"mean pairwise distance {100 * ratio:.1f} % of the real set's (< {100 * diversity_floor:.0f} %)")
  if recall is not None and recall < recall_floor:
    reasons.append(f"k-NN recall {recall:.2f} (< {recall_floor}): it covers almost no real image")
  return {"collapsed": bool(reasons), "reasons": reasons, "diversity_ratio": ratio}


def share_called(proba: np.ndarray, class_index: int) -> float:
  """Share of rows whose most probable class is `class_index` (NaN for no rows)."""
  proba = np.asarray(proba)
  return float(np.mean(proba.argmax(axis=-1) == class_index)) if len(proba) else float("nan")


def assess(
  real_pixels: np.ndarray,
  synth_pixels: np.ndarray,
  real_features: np.ndarray,
  synth_features: np.ndarray,
  *,
  k: int = K,
  quantile: float = MEMORISATION_QUANTILE,
) -> tuple[dict, dict]:
  """Every metric of one class: (summary, per-image arrays {'distance', 'nearest', 'memorised'}).

  Pixels are [0, 1] rows (`unit_pixels`); distances are reported as RMS pixel differences (L2 / sqrt(D)).
  """
  if not len(synth_pixels):
    raise ValueError("no synthetic images to assess")
  if not len(real_pixels):
    raise ValueError("no real images to compare the synthetic images with")
  scale = 1.0 / np.sqrt(np.asarray(real_pixels).reshape(len(real_pixels), -1).shape[1])
  mem = memorisation(synth_pixels, real_pixels, quantile=quantile)
  pr = precision_recall(real_features, synth_features, k=k)
  col = collapse(real_features, synth_features, recall=pr["recall"] if np.isfinite(pr["recall"]) else None)
  dist = mem["distance"] * scale
  summary = {
    "synthetic": int(len(synth_pixels)),
    "real": int(len(real_pixels)),
    "nearest_rms": {"min": float(dist.min()), "median": float(np.median(dist)), "mean": float(dist.mean())},
    "real_loo_median_rms": None if mem["real_loo_median"] is None else mem["real_loo_median"] * scale,
    "memorised_threshold_rms": mem["threshold"] * scale,
    "memorisation_quantile": quantile,
    "memorised_share": float(np.mean(mem["memorised"])),
    **pr,
    **col,
  }
  return summary, {"distance": dist, "nearest": mem["nearest"], "memorised": mem["memorised"]}
