"""TFDS loaders on `tfds.testing.mock_data` (no download), and the not-prepared message."""

from __future__ import annotations

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from deepsmote_jax.data import tfds_datasets  # pylint: disable=g-import-not-at-top


def test_mnist_mock_resized_to_rgb():
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    s = tfds_datasets.load_tfds("mnist", image_size=32, channels=3)
  assert s.images.shape == (40, 32, 32, 3) and s.images.dtype == np.uint8
  assert s.class_names == [str(i) for i in range(10)]
  assert s.files[0] == "mnist/train/0" and s.labels.min() >= 0 and s.labels.max() < 10


def test_cifar_mock_caps():
  with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
    s = tfds_datasets.load_tfds("cifar10", max_per_class=2, max_examples=15)
  assert s.images.shape[1:] == (32, 32, 3) and len(s) <= 15
  assert max(s.counts().values()) <= 2


def test_celeb_a_mock_hair_classes():
  with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
    s = tfds_datasets.load_tfds("celeb_a", image_size=16, channels=3, max_examples=30)
  assert s.class_names == ["black", "brown", "blond", "gray", "bald"]
  assert s.images.shape[1:] == (16, 16, 3) and len(s) >= 1


def test_not_prepared_message(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"(?s)not prepared under data_dir=.*nodata.*download_and_prepare"):
    tfds_datasets.load_tfds("fashion_mnist", data_dir=str(tmp_path / "nodata"))
  with pytest.raises(ValueError, match="unsupported"):
    tfds_datasets.load_tfds("imagenet2012")
