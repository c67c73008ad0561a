"""The data stage with a separate test folder (the paper's Table 2 protocol: another line, never trained on)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_jobs_pipeline import _write_images, tiny_config

from deepsmote_jax.jobs import prepare_data


def _config(tmp_path):
  config = tiny_config(_write_images(tmp_path / "line1", counts=(("NG", 10), ("OK", 30)), seed=0))
  config.data.test_root = str(_write_images(tmp_path / "line2", counts=(("NG", 6), ("OK", 9)), seed=1))
  return config


def test_separate_test_folder_is_the_whole_test_split_and_never_reaches_training(tmp_path):
  config = _config(tmp_path)
  summary = prepare_data.run(config, tmp_path / "data")
  train, val, test = (prepare_data.load_split(tmp_path / "data", n) for n in prepare_data.SPLITS)
  assert summary["counts"]["test"] == {"NG": 6, "OK": 9}
  assert all(f.startswith("test_root/") for f in test.files)
  assert not any(f.startswith("test_root/") for f in train.files + val.files)
  # Every line-1 image is in train or validation (ratios 0.5 / 0.25 renormalised to 2:1), none in test.
  assert len(train) + len(val) == 40 and len(val) > 0
  # The images themselves: no test image equals a training or validation image.
  seen = {img.tobytes() for img in np.concatenate([train.images, val.images])}
  assert not any(img.tobytes() in seen for img in test.images)
  np.testing.assert_array_equal(np.bincount(test.labels), [6, 9])
  assert test.class_names == train.class_names


def test_test_folder_change_is_part_of_the_data_fingerprint(tmp_path):
  config = _config(tmp_path)
  before = prepare_data.source_fingerprint(config)
  (tmp_path / "line2" / "NG" / "extra.png").write_bytes((tmp_path / "line2" / "NG").iterdir().__next__().read_bytes())
  assert prepare_data.source_fingerprint(config) != before


def test_unknown_class_or_missing_positive_class_in_the_test_folder_is_one_line(tmp_path):
  config = _config(tmp_path)
  shutil.copytree(tmp_path / "line2" / "NG", tmp_path / "line2" / "scratch")
  with pytest.raises(ValueError, match=r"config.data.test_root: class folder .*scratch.* is not a class"):
    prepare_data.run(config, tmp_path / "data")
  shutil.rmtree(tmp_path / "line2" / "scratch")
  shutil.rmtree(tmp_path / "line2" / "NG")
  with pytest.raises(ValueError, match=r"has no 'NG' folder \(config.pipeline.positive_class\)"):
    prepare_data.run(config, tmp_path / "data")
  config.data.test_root = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="config.data.test_root=.*nowhere.* is not a folder"):
    prepare_data.source_fingerprint(config)
