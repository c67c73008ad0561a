"""Imbalance protocols: seeded per-class subsampling, the DeepSMOTE paper's class counts, OK/NG ratios.

The paper (Dablain, Krawczyk & Chawla, DeepSMOTE, IEEE TNNLS 2022) trains on artificially imbalanced
versions of balanced benchmarks; the counts below are given per class index (class 0 keeps the most).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from deepsmote_jax.data.folder import ImageSet

MNIST_COUNTS = (4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40)
FASHION_MNIST_COUNTS = MNIST_COUNTS
CIFAR10_COUNTS = (4500, 2000, 1000, 800, 600, 500, 400, 250, 150, 80)
SVHN_COUNTS = CIFAR10_COUNTS
# CelebA: five hair-colour classes, in the order of `tfds_datasets.CELEBA_HAIR_CLASSES`
# (black, brown, blond, gray, bald: their frequency order in CelebA).
CELEBA_HAIR_COUNTS = (9000, 4500, 1000, 500, 160)

PAPER_COUNTS: dict[str, tuple[int, ...]] = {
  "mnist": MNIST_COUNTS,
  "fashion_mnist": FASHION_MNIST_COUNTS,
  "cifar10": CIFAR10_COUNTS,
  "svhn_cropped": SVHN_COUNTS,
  "svhn": SVHN_COUNTS,
  "celeb_a": CELEBA_HAIR_COUNTS,
}


def _resolve_counts(ds: ImageSet, counts: Sequence[int] | Mapping[str, int]) -> list[int | None]:
  if isinstance(counts, Mapping):
    unknown = set(counts) - set(ds.class_names)
    if unknown:
      raise ValueError(f"counts name unknown classes {sorted(unknown)}; classes are {ds.class_names}")
    return [counts.get(name) for name in ds.class_names]
  counts = list(counts)
  if len(counts) != len(ds.class_names):
    raise ValueError(f"{len(counts)} counts for {len(ds.class_names)} classes {ds.class_names}")
  return counts


def subsample_per_class(ds: ImageSet, counts: Sequence[int] | Mapping[str, int], *, seed: int = 0) -> ImageSet:
  """Keep exactly `counts[c]` images of each class, drawn without replacement by a seeded generator.

  `counts` is a sequence in label order or a {class name: count} mapping (classes it omits are kept
  whole). Images stay in their original order. A class with fewer images than requested is a ValueError.
  """
  wanted = _resolve_counts(ds, counts)
  rng = np.random.default_rng(seed)
  keep = []
  for c, n in enumerate(wanted):
    idx = np.flatnonzero(ds.labels == c)
    if n is None:
      keep.append(idx)
      continue
    if n < 0:
      raise ValueError(f"count for class {ds.class_names[c]!r} must be >= 0, got {n}")
    if n > len(idx):
      raise ValueError(f"class {ds.class_names[c]!r} has {len(idx)} images, {n} requested")
    keep.append(np.sort(rng.choice(idx, size=n, replace=False)))
  return ds.subset(np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64))


def paper_protocol(ds: ImageSet, name: str, *, seed: int = 0) -> ImageSet:
  """Subsample `ds` (e.g. a TFDS training set) to the paper's per-class counts for dataset `name`."""
  if name not in PAPER_COUNTS:
    raise ValueError(f"no paper protocol for {name!r}; known: {sorted(PAPER_COUNTS)}")
  return subsample_per_class(ds, PAPER_COUNTS[name], seed=seed)


def imbalance_ratio(ds: ImageSet, ok_class: str = "OK") -> float:
  """Number of non-OK (NG) images divided by the number of OK images."""
  counts = ds.counts()
  if ok_class not in counts:
    raise ValueError(f"OK class {ok_class!r} not in {ds.class_names}")
  if counts[ok_class] == 0:
    raise ValueError(f"no images of OK class {ok_class!r}")
  return (sum(counts.values()) - counts[ok_class]) / counts[ok_class]


def imbalance_counts(ds: ImageSet, ratio: float, *, ok_class: str = "OK", per_class: bool = False) -> dict[str, int]:
  """Per-class counts that keep every OK image and cut NG to `ratio` × #OK.

  With `per_class=False` the NG total is round(ratio × #OK), shared among the NG classes in proportion to
  what each has (largest remainder, so the total is exact); with `per_class=True` every NG class gets
  round(ratio × #OK). Asking for more than a class has is a ValueError.
  """
  if not ratio > 0:
    raise ValueError(f"ratio must be > 0, got {ratio}")
  counts = ds.counts()
  if ok_class not in counts:
    raise ValueError(f"OK class {ok_class!r} not in {ds.class_names}")
  n_ok = counts[ok_class]
  ng = [c for c in ds.class_names if c != ok_class]
  if not ng:
    raise ValueError("no NG class besides the OK class")
  target = int(round(ratio * n_ok))
  if target < 1:
    raise ValueError(f"ratio {ratio} × {n_ok} OK images leaves no NG image")
  out = {ok_class: n_ok}
  if per_class:
    for c in ng:
      out[c] = target
  else:
    have = np.array([counts[c] for c in ng], np.float64)
    if target > have.sum():
      raise ValueError(f"ratio {ratio} needs {target} NG images, only {int(have.sum())} available")
    share = have / have.sum() * target
    base = np.floor(share).astype(int)
    order = np.argsort(-(share - base), kind="stable")
    base[order[: target - base.sum()]] += 1
    out.update({c: int(n) for c, n in zip(ng, base)})
  for c in ng:
    if out[c] > counts[c]:
      raise ValueError(f"class {c!r} has {counts[c]} images, {out[c]} requested for ratio {ratio}")
  return out


def apply_imbalance_ratio(
  ds: ImageSet, ratio: float, *, ok_class: str = "OK", per_class: bool = False, seed: int = 0
) -> ImageSet:
  """`ds` with every OK image and NG images cut (seeded) to `ratio` × #OK (see `imbalance_counts`)."""
  return subsample_per_class(ds, imbalance_counts(ds, ratio, ok_class=ok_class, per_class=per_class), seed=seed)
