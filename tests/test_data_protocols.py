"""Per-class subsampling, the DeepSMOTE paper counts and OK/NG imbalance ratios."""

from __future__ import annotations

import numpy as np
import pytest

from deepsmote_jax.data import protocols
from deepsmote_jax.data.folder import ImageSet


def _balanced(per_class, names):
  labels = np.repeat(np.arange(len(names)), per_class)
  n = len(labels)
  images = (np.arange(n) % 256).astype(np.uint8).reshape(n, 1, 1, 1)
  return ImageSet(images, labels, list(names), [f"{i}.png" for i in range(n)])


def test_paper_constants():
  assert protocols.MNIST_COUNTS == (4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40)
  assert protocols.FASHION_MNIST_COUNTS == protocols.MNIST_COUNTS
  assert protocols.CIFAR10_COUNTS == (4500, 2000, 1000, 800, 600, 500, 400, 250, 150, 80)
  assert protocols.SVHN_COUNTS == protocols.CIFAR10_COUNTS
  assert protocols.CELEBA_HAIR_COUNTS == (9000, 4500, 1000, 500, 160)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_paper_protocol_counts_exact(name):
  ds = _balanced(4600, [str(i) for i in range(10)])
  out = protocols.paper_protocol(ds, name, seed=0)
  assert list(out.counts().values()) == list(protocols.PAPER_COUNTS[name])
  assert len(set(out.files)) == len(out)
  assert (np.diff([int(f[:-4]) for f in out.files]) > 0).all()  # original order kept
  same = protocols.paper_protocol(ds, name, seed=0)
  assert same.files == out.files
  assert protocols.paper_protocol(ds, name, seed=1).files != out.files


def test_subsample_errors_and_mapping():
  ds = _balanced(10, ["a", "b", "c"])
  with pytest.raises(ValueError, match="class 'b' has 10 images, 11 requested"):
    protocols.subsample_per_class(ds, [1, 11, 1])
  with pytest.raises(ValueError, match="2 counts for 3 classes"):
    protocols.subsample_per_class(ds, [1, 1])
  out = protocols.subsample_per_class(ds, {"b": 3})
  assert out.counts() == {"a": 10, "b": 3, "c": 10}
  with pytest.raises(ValueError, match="unknown classes"):
    protocols.subsample_per_class(ds, {"zz": 3})


def test_imbalance_ratio_ok_ng():
  ds = ImageSet(
    np.zeros((100 + 30 + 20, 1, 1, 1), np.uint8),
    [0] * 100 + [1] * 30 + [2] * 20,
    ["OK", "dent", "scratch"],
    [str(i) for i in range(150)],
  )
  assert protocols.imbalance_ratio(ds) == pytest.approx(0.5)
  counts = protocols.imbalance_counts(ds, 0.1)
  assert counts == {"OK": 100, "dent": 6, "scratch": 4}
  out = protocols.apply_imbalance_ratio(ds, 0.1, seed=2)
  assert out.counts() == counts and protocols.imbalance_ratio(out) == pytest.approx(0.1)
  assert protocols.apply_imbalance_ratio(ds, 0.15, per_class=True).counts() == {"OK": 100, "dent": 15, "scratch": 15}
  with pytest.raises(ValueError, match="'scratch' has 20 images, 25 requested"):
    protocols.apply_imbalance_ratio(ds, 0.25, per_class=True)
  with pytest.raises(ValueError, match="needs 60 NG images, only 50"):
    protocols.imbalance_counts(ds, 0.6)
