"""SMOTE in latent space, in pure JAX: exact blocked k-nearest neighbours and interpolation.

DeepSMOTE over-samples the minority classes in the encoder's latent space with SMOTE (Chawla et al. 2002)
and decodes the new codes to images. This module is that SMOTE step, written so it runs jitted on any
backend and scales to a million latents per class:

* `nearest_neighbors`: exact Euclidean k-NN, computed tile by tile (query block x reference block, squared
  distances from one matrix product, a running top-k merged after every tile), so memory is
  O(n·k + block²), never an n×n matrix.
* `smote_samples`: one SMOTE draw (base point, one of its k nearest neighbours, gap ~ U[0, 1)) with the same
  distribution as `imblearn.over_sampling.SMOTE`, returning the provenance of every synthetic row.
* `sampling_targets`: imbalanced-learn's `sampling_strategy` semantics (how many new samples per class).
* `fit_resample`: the per-class driver for 'smote', 'borderline-1', 'borderline-2' (Han et al. 2005) and
  'adasyn' (He et al. 2008), following imbalanced-learn's `SMOTE`, `BorderlineSMOTE` and `ADASYN`: it returns
  `(X_res, y_res)` (the originals first, then the synthetic rows), or with `return_provenance=True` the
  `Resampled` record (the synthetic rows only, with the base row, neighbour row and gap of each).

Neighbour order matches scikit-learn's `NearestNeighbors` on data without ties: the point itself is
excluded by index (so exact duplicates are each other's neighbours at distance 0) and equal distances are
ordered by the lower index.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

KINDS = ("smote", "borderline-1", "borderline-2", "adasyn")
_STRATEGY_NAMES = ("auto", "not majority", "minority", "not minority", "all", "majority")


# --------------------------------------------------------------------------------------------------------
# Nearest neighbours.


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


TileSize = int | tuple[int, int]


def _tiles(block_size: TileSize) -> tuple[int, int]:
  """`block_size` as (query tile edge, reference tile edge); one int sets both."""
  pair = (block_size, block_size) if isinstance(block_size, numbers.Integral) else tuple(block_size)
  if len(pair) != 2 or not all(isinstance(b, numbers.Integral) and b >= 1 for b in pair):
    raise ValueError(f"block_size must be a positive int or a (query, reference) pair of them, got {block_size!r}")
  return int(pair[0]), int(pair[1])


def _block(n: int, block_size: int) -> int:
  """Tile edge actually used: `block_size`, or n rounded up to a multiple of 8 when n is smaller."""
  return max(1, min(block_size, _round_up(n, 8)))


def _tile_edges(block_size: TileSize, n_query: int, n_reference: int) -> dict[str, int]:
  """`_blocked_knn`'s query_block and reference_block for sets of these sizes."""
  query_tile, reference_tile = _tiles(block_size)
  return dict(query_block=_block(n_query, query_tile), reference_block=_block(n_reference, reference_tile))


@functools.partial(jax.jit, static_argnames=("k", "query_block", "reference_block", "precision"))
def _blocked_knn(query, reference, self_index, *, k, query_block, reference_block, precision):
  """Exact k-NN by tiles; `self_index[i]` is the reference row query i must skip (-1: none)."""
  # No centring: it would make exactly tied distances (duplicates, grid data) unequal by rounding, and
  # the tie rule (lower index first) is only meaningful on exactly computed distances.
  dtype = jnp.promote_types(jnp.result_type(query, reference), jnp.float32)
  query = query.astype(dtype)
  reference = reference.astype(dtype)
  n_query, dim = query.shape
  n_ref = reference.shape[0]
  n_query_pad = _round_up(n_query, query_block)
  n_ref_pad = _round_up(n_ref, reference_block)

  query = jnp.pad(query, ((0, n_query_pad - n_query), (0, 0)))
  self_index = jnp.pad(self_index.astype(jnp.int32), (0, n_query_pad - n_query), constant_values=-1)
  ref_sq = jnp.sum(reference * reference, axis=1)
  # Padded reference rows get |b|² = inf, hence an infinite distance to every query.
  ref_sq = jnp.pad(ref_sq, (0, n_ref_pad - n_ref), constant_values=jnp.inf)
  reference = jnp.pad(reference, ((0, n_ref_pad - n_ref), (0, 0)))

  query_tiles = query.reshape(n_query_pad // query_block, query_block, dim)
  self_tiles = self_index.reshape(n_query_pad // query_block, query_block)
  ref_tiles = reference.reshape(n_ref_pad // reference_block, reference_block, dim)
  ref_sq_tiles = ref_sq.reshape(n_ref_pad // reference_block, reference_block)
  columns = jnp.arange(reference_block, dtype=jnp.int32)

  def knn_of_query_tile(args):
    q, skip = args
    q_sq = jnp.sum(q * q, axis=1)

    def merge_reference_tile(j, best):
      best_neg_d2, best_idx = best
      r = ref_tiles[j]
      cross = lax.dot_general(q, r, (((1,), (1,)), ((), ())), precision=precision)
      d2 = jnp.maximum(q_sq[:, None] + ref_sq_tiles[j][None, :] - 2.0 * cross, 0.0)
      idx = j * reference_block + columns
      d2 = jnp.where(idx[None, :] == skip[:, None], jnp.inf, d2)
      # Earlier tiles hold lower indices and lax.top_k keeps equal values in position order, so ties go
      # to the lower reference index.
      cand_neg_d2 = jnp.concatenate([best_neg_d2, -d2], axis=1)
      cand_idx = jnp.concatenate([best_idx, jnp.broadcast_to(idx, d2.shape)], axis=1)
      new_neg_d2, pos = lax.top_k(cand_neg_d2, k)
      return new_neg_d2, jnp.take_along_axis(cand_idx, pos, axis=1)

    init = (jnp.full((query_block, k), -jnp.inf, dtype), jnp.full((query_block, k), -1, jnp.int32))
    neg_d2, idx = lax.fori_loop(0, ref_tiles.shape[0], merge_reference_tile, init)
    return jnp.sqrt(-neg_d2), idx

  dist, idx = lax.map(knn_of_query_tile, (query_tiles, self_tiles))
  return dist.reshape(n_query_pad, k)[:n_query], idx.reshape(n_query_pad, k)[:n_query]


def nearest_neighbors(
  query: jax.Array,
  k: int = 5,
  *,
  reference: jax.Array | None = None,
  self_index: jax.Array | None = None,
  block_size: TileSize = 1024,
  exclude_self: bool = True,
  precision: lax.Precision | str = lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array]:
  """Exact Euclidean k nearest neighbours, blocked so memory stays O(n·k + block_size²).

  Args:
    query: (n, d) points whose neighbours are wanted.
    k: neighbours per point.
    reference: (m, d) points to search; default `query` itself (neighbours within one set).
    self_index: with `reference`, the row of `reference` that each query point is (e.g. the class members'
      positions in the full data set), excluded from its own neighbours when `exclude_self`. Without it a
      separate reference set excludes nothing.
    block_size: tile edge for both the query and the reference side, or a (query, reference) pair: a wide
      reference tile means fewer, larger steps of the running top-k loop (fewer kernel launches on a GPU).
    exclude_self: skip each point itself (by index, so duplicates still find each other).
    precision: matmul precision; HIGHEST keeps float32 exact on GPUs that would otherwise use TF32.

  Returns:
    (distances, indices), each (n, k), nearest first, indices into `reference` (int32).
  """
  query = jnp.asarray(query)
  if query.ndim != 2:
    raise ValueError(f"query must be (n, d), got shape {query.shape}")
  n_query = query.shape[0]
  if reference is None:
    reference = query
    skip = jnp.arange(n_query, dtype=jnp.int32) if exclude_self else None
  else:
    reference = jnp.asarray(reference)
    if reference.ndim != 2 or reference.shape[1] != query.shape[1]:
      raise ValueError(f"reference must be (m, {query.shape[1]}), got shape {reference.shape}")
    skip = None
    if exclude_self and self_index is not None:
      skip = jnp.asarray(self_index, jnp.int32)
      if skip.shape != (n_query,):
        raise ValueError(f"self_index must have shape ({n_query},), got {skip.shape}")
  n_candidates = reference.shape[0] - (skip is not None)
  if not 1 <= k <= n_candidates:
    raise ValueError(f"k={k} neighbours asked but only {n_candidates} candidate points exist")
  if skip is None:
    skip = jnp.full((n_query,), -1, jnp.int32)
  return _blocked_knn(
    query, reference, skip, k=int(k), **_tile_edges(block_size, n_query, reference.shape[0]), precision=precision
  )


# --------------------------------------------------------------------------------------------------------
# SMOTE draw.


class SmoteDraw(NamedTuple):
  """Synthetic points and their provenance: samples = x[base] + gap * (reference[neighbor] - x[base])."""

  samples: jax.Array  # (n_samples, d)
  base: jax.Array  # (n_samples,) row of x
  neighbor: jax.Array  # (n_samples,) row of the reference set (x unless one was given)
  gap: jax.Array  # (n_samples,)


def _uniform_index(high_bits, low_bits, span: int):
  """Integers uniform in [0, span) from two 32-bit words (jax.random.randint's reduction)."""
  multiplier = jnp.uint32((2**32) % span)
  span = jnp.uint32(span)
  return ((high_bits % span) * multiplier + low_bits % span) % span


def _unit_uniform(bits, dtype):
  """Floats uniform in [0, 1) from 32-bit words (23 mantissa bits, as jax.random.uniform)."""
  one = lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0
  return one.astype(dtype)


def _draw(key, points, reference, nn_indices, n_samples, base_weights=None, base=None, half_gap=None):
  """SMOTE interpolation with static `n_samples`; traceable (no Python branching on values).

  All randomness comes from one `jax.random.bits` call (one threefry per row, which also keeps the
  compile short); indices use randint's two-word reduction, so the draw is uniform to ~2^-32.
  """
  n, k = nn_indices.shape
  dtype = jnp.promote_types(points.dtype, jnp.float32)
  bits = jax.random.bits(key, (4, n_samples), jnp.uint32)
  if base is None and base_weights is None and n * k < 2**31:
    # One uniform index over the n*k (base, neighbour slot) pairs, as imblearn draws them.
    pair = _uniform_index(bits[0], bits[1], n * k).astype(jnp.int32)
    base, col = pair // k, pair % k
  else:
    if base is None and base_weights is None:
      base = _uniform_index(bits[0], bits[1], n).astype(jnp.int32)
    elif base is None:
      # Inverse CDF: O(n + n_samples log n) memory, and zero weights are never drawn.
      cumulative = jnp.cumsum(base_weights.astype(jnp.float32))
      u = 1.0 - _unit_uniform(bits[0], jnp.float32)  # (0, 1]
      base = jnp.searchsorted(cumulative, cumulative[-1] * u).astype(jnp.int32)
    col = _uniform_index(bits[1], bits[3], k).astype(jnp.int32)
  neighbor = nn_indices[base, col]
  gap = _unit_uniform(bits[2], dtype)
  if half_gap is not None:
    gap = jnp.where(half_gap[neighbor], 0.5 * gap, gap)
  x_base = points[base].astype(dtype)
  x_neighbor = reference[neighbor].astype(dtype)
  samples = x_base + gap[:, None] * (x_neighbor - x_base)
  return SmoteDraw(samples.astype(points.dtype), base, neighbor, gap)


_draw_jit = jax.jit(_draw, static_argnames=("n_samples",))


def smote_samples(
  key: jax.Array,
  x: jax.Array,
  n_samples: int,
  k: int = 5,
  *,
  nn_indices: jax.Array | None = None,
  base_weights: jax.Array | None = None,
  base: jax.Array | None = None,
  reference: jax.Array | None = None,
  half_gap: jax.Array | None = None,
  block_size: TileSize = 1024,
) -> SmoteDraw:
  """Draws `n_samples` SMOTE points from `x`, with the distribution of imblearn's SMOTE.

  Base row uniform over x (or proportional to `base_weights`, or exactly the rows `base` given), a neighbour
  uniform among the base's k nearest, gap ~ U[0, 1), sample = x[base] + gap * (x[nbr] - x[base]).

  Args:
    key: jax.random key.
    x: (n, d) points of one class.
    n_samples: number of synthetic points (static).
    k: neighbours per point when `nn_indices` is not given.
    nn_indices: (n, k') precomputed neighbour rows (into `reference`, default x); skips the k-NN.
    base_weights: (n,) non-negative weights for the base row (Borderline-SMOTE: danger mask).
    base: (n_samples,) explicit base rows (ADASYN's fixed allocation); overrides `base_weights`.
    reference: points `nn_indices` index into (Borderline-SMOTE-2: the whole data set).
    half_gap: (len(reference),) bool; a neighbour flagged here gets gap ~ U[0, 0.5) (Borderline-SMOTE-2's
      rule for neighbours of other classes).
    block_size: k-NN tile edge, or a (query, reference) pair (see `nearest_neighbors`).
  """
  x = jnp.asarray(x)
  if reference is None:
    reference = x
  if nn_indices is None:
    if reference is not x:
      raise ValueError("nn_indices must be given with a separate reference set")
    _, nn_indices = nearest_neighbors(x, k, block_size=block_size)
  if base is not None:
    base = jnp.asarray(base, jnp.int32)
    if base.shape != (n_samples,):
      raise ValueError(f"base must have shape ({n_samples},), got {base.shape}")
  return _draw_jit(
    key, x, jnp.asarray(reference), jnp.asarray(nn_indices), int(n_samples), base_weights, base, half_gap
  )


# --------------------------------------------------------------------------------------------------------
# Sampling targets (imbalanced-learn's `sampling_strategy`).


def _py(value):
  return value.item() if isinstance(value, np.generic) else value


def sampling_targets(
  class_counts: Mapping[Any, int],
  sampling_strategy: str | float | Mapping[Any, int] | Callable[[np.ndarray], Mapping[Any, int]] = "auto",
  *,
  y: np.ndarray | None = None,
) -> dict[Any, int]:
  """Number of new samples per class, with imbalanced-learn's over-sampling meaning of the strategy.

  'auto'/'not majority': every class but the majority up to the majority's count; 'minority': only the
  smallest class; 'not minority': all but the smallest; 'all': every class (the majority gets 0). Ties for
  majority/minority go to the first class in sorted order. A float (binary only) is the wanted
  minority/majority ratio after resampling. A dict gives target counts per class (classes left out are not
  sampled). A callable gets y (rebuilt from the counts when not given) and returns such a dict.

  Returns:
    {class: n_new} sorted by class, for the classes the strategy targets.
  """
  counts = {_py(c): int(n) for c, n in sorted(class_counts.items(), key=lambda item: item[0])}
  if len(counts) < 2:
    raise ValueError(f"over-sampling needs at least 2 classes, got {len(counts)}: {list(counts)}")
  majority = max(counts, key=counts.get)
  minority = min(counts, key=counts.get)
  n_majority = counts[majority]

  def from_target_counts(targets: Mapping[Any, int]) -> dict[Any, int]:
    targets = {_py(c): n for c, n in targets.items()}
    unknown = [c for c in targets if c not in counts]
    if unknown:
      raise ValueError(f"sampling_strategy names class(es) {unknown} not present in y (classes: {list(counts)})")
    out = {}
    for c in sorted(targets):
      n = targets[c]
      if n < 0:
        raise ValueError(f"sampling_strategy asks for a negative count ({n}) for class {c!r}")
      if n < counts[c]:
        raise ValueError(
          f"sampling_strategy asks for {n} samples of class {c!r}, fewer than the "
          f"{counts[c]} it has; over-sampling cannot remove samples"
        )
      out[c] = int(n - counts[c])
    return out

  if isinstance(sampling_strategy, str):
    if sampling_strategy in ("auto", "not majority"):
      return {c: n_majority - n for c, n in counts.items() if c != majority}
    if sampling_strategy == "minority":
      return {minority: n_majority - counts[minority]}
    if sampling_strategy == "not minority":
      return {c: n_majority - n for c, n in counts.items() if c != minority}
    if sampling_strategy == "all":
      return {c: n_majority - n for c, n in counts.items()}
    if sampling_strategy == "majority":
      raise ValueError("sampling_strategy='majority' cannot be used for over-sampling")
    raise ValueError(
      f"unknown sampling_strategy {sampling_strategy!r}; use one of {_STRATEGY_NAMES}, a float, a dict or a callable"
    )
  if isinstance(sampling_strategy, Mapping):
    return from_target_counts(sampling_strategy)
  if isinstance(sampling_strategy, numbers.Real) and not isinstance(sampling_strategy, bool):
    if len(counts) != 2:
      raise ValueError(
        f"a float sampling_strategy is only defined for 2 classes; got {len(counts)}, use a dict instead"
      )
    if not 0 < sampling_strategy <= 1:
      raise ValueError(f"a float sampling_strategy must be in (0, 1], got {sampling_strategy}")
    out = {c: int(n_majority * sampling_strategy - n) for c, n in counts.items() if c != majority}
    for c, n_new in out.items():
      if n_new <= 0:
        raise ValueError(
          f"sampling_strategy={sampling_strategy} asks for "
          f"{int(n_majority * sampling_strategy)} samples of class {c!r}, not more than the "
          f"{counts[c]} it has; increase the ratio"
        )
    return out
  if callable(sampling_strategy):
    if y is None:
      y = np.repeat(np.asarray(list(counts)), list(counts.values()))
    return from_target_counts(sampling_strategy(y))
  raise TypeError(f"sampling_strategy of type {type(sampling_strategy).__name__} is not supported")


# --------------------------------------------------------------------------------------------------------
# Per-class resampling.


@dataclasses.dataclass(frozen=True)
class Resampled:
  """Synthetic rows only, with per-row provenance into the ORIGINAL X.

  samples[i] = X[base[i]] + gap[i] * (X[neighbor[i]] - X[base[i]]), label labels[i].
  """

  samples: jax.Array  # (m, d), X's dtype
  labels: np.ndarray  # (m,), y's dtype
  base: np.ndarray  # (m,) int64
  neighbor: np.ndarray  # (m,) int64
  gap: np.ndarray  # (m,) float
  targets: dict  # sampling_targets(...) that was asked for
  k_used: dict  # class -> neighbours actually used (smaller than k_neighbors for small classes)
  danger: dict  # borderline kinds: class -> indices into X of the 'danger' points

  def concatenate(self, X, y) -> tuple[jax.Array, np.ndarray]:
    """Original data followed by the synthetic rows, as imblearn's fit_resample returns them."""
    return (
      jnp.concatenate([jnp.asarray(X, self.samples.dtype), self.samples]),
      np.concatenate([np.asarray(y), self.labels]),
    )

  def counts(self) -> dict:
    """Number of synthetic rows per class."""
    classes, n = np.unique(self.labels, return_counts=True)
    return {_py(c): int(m) for c, m in zip(classes, n)}


@functools.partial(jax.jit, static_argnames=("n_samples", "k", "block_size", "precision"))
def _smote_class(key, x_class, base_weights, *, n_samples, k, block_size, precision):
  """Within-class k-NN and the SMOTE draw, fused in one compiled call."""
  nn = _within_class_knn(x_class, k=k, block_size=block_size, precision=precision)
  return _draw(key, x_class, x_class, nn, n_samples, base_weights)


def _within_class_knn(x_class, *, k, block_size, precision):
  """Indices (n, k) of each row's k nearest other rows of the same class."""
  n = x_class.shape[0]
  skip = jnp.arange(n, dtype=jnp.int32)
  _, nn = _blocked_knn(x_class, x_class, skip, k=k, **_tile_edges(block_size, n, n), precision=precision)
  return nn


def _all_class_knn(x_class, X, class_rows, *, k, block_size, precision):
  """Indices (n, k) into X of each class row's k nearest rows among all classes (itself excluded)."""
  edges = _tile_edges(block_size, x_class.shape[0], X.shape[0])
  _, nn = _blocked_knn(x_class, X, class_rows, k=k, **edges, precision=precision)
  return nn


@functools.partial(jax.jit, static_argnames=("n_samples", "k", "block_size", "precision"))
def _borderline2_class(key, x_class, X, class_rows, other_class, base_weights, *, n_samples, k, block_size, precision):
  """Neighbours among all classes, other-class neighbours interpolated with gap in [0, 0.5)."""
  nn = _all_class_knn(x_class, X, class_rows, k=k, block_size=block_size, precision=precision)
  return _draw(key, x_class, X, nn, n_samples, base_weights, half_gap=other_class)


@functools.partial(jax.jit, static_argnames=("n_samples", "k", "block_size", "precision"))
def _fixed_base_class(key, x_class, base, *, n_samples, k, block_size, precision):
  """Within-class k-NN and a draw from given base rows (ADASYN)."""
  nn = _within_class_knn(x_class, k=k, block_size=block_size, precision=precision)
  return _draw(key, x_class, x_class, nn, n_samples, base=base)


@functools.partial(jax.jit, static_argnames=("m", "block_size", "precision"))
def _other_class_neighbors(x_class, X, class_rows, y_codes, class_code, *, m, block_size, precision):
  """How many of each class point's m nearest neighbours (among all of X) belong to another class."""
  nn = _all_class_knn(x_class, X, class_rows, k=m, block_size=block_size, precision=precision)
  return jnp.sum(y_codes[nn] != class_code, axis=1)


def _draw_size(n: int) -> int:
  """n rounded up to one of a few sizes per octave (<= 25% extra), so classes share compiled draws."""
  return _round_up(n, 2 ** max(3, n.bit_length() - 2))


def _check_inputs(X, y):
  """Shapes, labels and finiteness, checked before any work; returns (X as jax array, y as numpy)."""
  X = jnp.asarray(X)
  y = np.asarray(y)
  if X.ndim != 2:
    raise ValueError(f"X must be (n, d) latent codes, got shape {X.shape}")
  if y.shape != (X.shape[0],):
    raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
  if not jnp.issubdtype(X.dtype, jnp.floating):
    X = X.astype(jnp.float32)
  bad_rows = np.asarray(~jnp.all(jnp.isfinite(X), axis=1))
  if bad_rows.any():
    classes, n_bad = np.unique(y[bad_rows], return_counts=True)
    detail = ", ".join(f"class {_py(c)!r}: {n} row(s)" for c, n in zip(classes, n_bad))
    raise ValueError(f"X has NaN/inf latent codes ({detail}); the encoder output must be finite")
  return X, y


def fit_resample(
  key: jax.Array,
  X,
  y,
  *,
  sampling_strategy: Any = "auto",
  k_neighbors: int = 5,
  kind: str = "smote",
  m_neighbors: int = 10,
  strict: bool = False,
  block_size: TileSize = 1024,
  precision: lax.Precision | str = lax.Precision.HIGHEST,
  return_provenance: bool = False,
) -> tuple[jax.Array, np.ndarray] | Resampled:
  """Over-samples latent codes X (n, d) with labels y, like imblearn's SMOTE/BorderlineSMOTE/ADASYN.

  Each class is resampled on its own (a Python loop over the few classes); its k-NN and draw are one
  jitted call with static shapes (Borderline/ADASYN add one call for the all-class neighbourhood, whose
  result decides the bases on the host).

  Returns `(X_res, y_res)` as imbalanced-learn's `fit_resample` does: X (as a float jax array) followed by
  the synthetic rows, y followed by their labels. With `return_provenance=True` it returns the `Resampled`
  record instead: the synthetic rows only, with each row's base, neighbour (indices into X) and gap, the
  targets, the neighbours used per class and the Borderline danger sets (`Resampled.concatenate(X, y)` is
  the default result).

  Per-class counts equal imblearn's for every kind: SMOTE and Borderline produce the targets (Borderline
  skips a class with no point in danger, with a warning, as imblearn does silently); ADASYN allocates
  rint(weight * n_new) rows per point, so its total can differ from the target by rounding, as in
  imblearn. One deliberate difference: Borderline-SMOTE-2 draws the gap toward an other-class neighbour
  as U[0, 0.5) (Han et al. 2005); imblearn multiplies U[0, 1) by U[0, 0.5).

  Args:
    key: jax.random key; a class's draw uses `fold_in(key, position of the class in sorted order)`.
    X: (n, d) latent codes (jax or numpy). y: (n,) integer labels.
    sampling_strategy: see `sampling_targets`.
    k_neighbors: SMOTE's k (ADASYN: also the neighbourhood for its weights, imblearn's n_neighbors).
    kind: 'smote', 'borderline-1', 'borderline-2' or 'adasyn'.
    m_neighbors: Borderline-SMOTE's neighbourhood (among all classes) that decides 'danger'.
    strict: raise instead of warning when a class has k_neighbors or fewer samples.
    block_size: k-NN tile edge, or a (query, reference) pair (see `nearest_neighbors`).
    precision: k-NN matmul precision.
    return_provenance: return the `Resampled` record (synthetic rows and their provenance) instead of
      `(X_res, y_res)`.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  if k_neighbors < 1:
    raise ValueError(f"k_neighbors must be >= 1, got {k_neighbors}")
  block_size = _tiles(block_size)
  X, y = _check_inputs(X, y)
  classes, y_codes, class_sizes = np.unique(y, return_inverse=True, return_counts=True)
  counts = {_py(c): int(n) for c, n in zip(classes, class_sizes)}
  targets = sampling_targets(counts, sampling_strategy, y=y)
  k_used = _neighbours_per_class(
    counts, targets, kind=kind, k_neighbors=k_neighbors, m_neighbors=m_neighbors, strict=strict, n_total=X.shape[0]
  )
  settings = dict(
    kind=kind, k_neighbors=k_neighbors, m_neighbors=m_neighbors, block_size=block_size, precision=precision
  )
  ctx = _ClassContext(X=X, y_codes=y_codes, y_codes_dev=jnp.asarray(y_codes, jnp.int32), **settings)
  samples, labels, base, neighbor, gap, danger = [], [], [], [], [], {}
  for c, n_new in targets.items():
    if n_new == 0:
      continue
    code = int(np.searchsorted(classes, c))
    drawn = _resample_class(ctx, key, c, code, n_new, k_used[c], danger)
    if drawn is None:
      continue
    draw, class_rows, neighbor_rows, n_new = drawn
    # Draws are i.i.d. given the class, so the first n_new of the padded draw are an exact draw of n_new.
    samples.append(draw.samples[:n_new])
    labels.append(np.full(n_new, c, dtype=y.dtype))
    base.append(class_rows[np.asarray(draw.base[:n_new])])
    neighbor.append(neighbor_rows[np.asarray(draw.neighbor[:n_new])])
    gap.append(np.asarray(draw.gap[:n_new]))

  if samples:
    out_samples = jnp.concatenate(samples)
    out = (np.concatenate(labels), np.concatenate(base), np.concatenate(neighbor), np.concatenate(gap))
  else:
    out_samples = jnp.zeros((0, X.shape[1]), X.dtype)
    out = (np.zeros(0, y.dtype), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
  result = Resampled(out_samples, *out, targets=targets, k_used=k_used, danger=danger)
  return result if return_provenance else result.concatenate(X, y)


def _neighbours_per_class(
  counts: dict, targets: dict, *, kind: str, k_neighbors: int, m_neighbors: int, strict: bool, n_total: int
) -> dict:
  """The k each resampled class uses; every neighbour-count problem is reported before any computation."""
  k_used = {}
  for c, n_new in targets.items():
    if n_new == 0:
      continue
    n_c = counts[c]
    if n_c < 2:
      raise ValueError(f"class {c!r} has a single sample: SMOTE needs at least one neighbour in the class")
    if kind == "borderline-2":
      k_used[c] = min(k_neighbors, n_total - 1)
    elif n_c <= k_neighbors:
      message = f"class {c!r} has {n_c} samples, fewer than k_neighbors + 1 = {k_neighbors + 1}"
      if strict:
        raise ValueError(message)
      warnings.warn(f"{message}; using k = {n_c - 1} neighbours for it", stacklevel=3)
      k_used[c] = n_c - 1
    else:
      k_used[c] = k_neighbors
  m_context = {"borderline-1": m_neighbors, "borderline-2": m_neighbors, "adasyn": k_neighbors}.get(kind)
  if m_context is not None and targets and n_total - 1 < m_context:
    raise ValueError(f"kind={kind!r} looks at {m_context} neighbours among all classes but X has only {n_total} rows")
  return k_used


class _ClassContext(NamedTuple):
  """What every class's resampling reads: all codes, their class codes and the settings."""

  X: jax.Array
  y_codes: np.ndarray
  y_codes_dev: jax.Array
  kind: str
  k_neighbors: int
  m_neighbors: int
  block_size: tuple[int, int]
  precision: Any


def _resample_class(ctx: _ClassContext, key, c, code: int, n_new: int, k: int, danger: dict):
  """(draw, class rows, neighbour rows, number drawn) for one class, or None when Borderline skips it."""
  class_rows = np.flatnonzero(ctx.y_codes == code)
  class_rows_dev = jnp.asarray(class_rows, jnp.int32)
  x_class = ctx.X[class_rows_dev]
  class_key = jax.random.fold_in(key, code)
  static = dict(k=k, block_size=ctx.block_size, precision=ctx.precision)
  if ctx.kind == "smote":
    return _smote_class(class_key, x_class, None, n_samples=_draw_size(n_new), **static), class_rows, class_rows, n_new
  m = ctx.k_neighbors if ctx.kind == "adasyn" else ctx.m_neighbors
  n_other = np.asarray(
    _other_class_neighbors(
      x_class, ctx.X, class_rows_dev, ctx.y_codes_dev, code, m=m, block_size=ctx.block_size, precision=ctx.precision
    )
  )
  if ctx.kind == "adasyn":
    ratio = n_other / ctx.k_neighbors
    if not ratio.sum():
      raise ValueError(
        f"class {c!r}: none of its samples has a neighbour of another class, so ADASYN's "
        "weights are undefined; use kind='smote'"
      )
    per_point = np.rint(ratio / ratio.sum() * n_new).astype(np.int64)
    n_new = int(per_point.sum())
    if not n_new:
      raise ValueError(f"class {c!r}: ADASYN's rounded allocation generates no sample")
    fixed_base = np.zeros(_draw_size(n_new), np.int32)
    fixed_base[:n_new] = np.repeat(np.arange(len(class_rows)), per_point)
    draw = _fixed_base_class(class_key, x_class, jnp.asarray(fixed_base), n_samples=len(fixed_base), **static)
    return draw, class_rows, class_rows, n_new
  in_danger = (n_other >= ctx.m_neighbors / 2) & (n_other < ctx.m_neighbors)
  danger[c] = class_rows[in_danger]
  if not in_danger.any():
    warnings.warn(
      f"class {c!r}: no sample is in danger (borderline), so none is generated for it (as imblearn's BorderlineSMOTE)",
      stacklevel=3,
    )
    return None
  weights = jnp.asarray(in_danger, jnp.float32)
  if ctx.kind == "borderline-1":
    return (
      _smote_class(class_key, x_class, weights, n_samples=_draw_size(n_new), **static),
      class_rows,
      class_rows,
      n_new,
    )
  draw = _borderline2_class(
    class_key, x_class, ctx.X, class_rows_dev, ctx.y_codes_dev != code, weights, n_samples=_draw_size(n_new), **static
  )
  return draw, class_rows, np.arange(ctx.X.shape[0]), n_new
