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


def _six_classes(tmp_path):
  counts = tuple((name, 12) for name in ("crazing", "inclusion", "patches", "pitted", "rolled", "scratches"))
  config = tiny_config(_write_images(tmp_path / "neu", counts=counts, seed=0))
  config.pipeline.positive_class = "scratches"
  config.imbalance.ok_class = ""
  config.imbalance.minority_ratio = 0.25
  config.imbalance.scarce_classes = ("scratches",)
  return config


def test_scarce_classes_cut_only_those_to_the_ratio_of_the_other_classes_mean(tmp_path):
  config = _six_classes(tmp_path)
  summary = prepare_data.run(config, tmp_path / "data")
  train = summary["counts"]["train"]
  # 6 training images per class (ratios 0.5 / 0.25 / 0.25); scratches cut to max(2, round(0.25 x 6)) = 2.
  assert train == {"crazing": 6, "inclusion": 6, "patches": 6, "pitted": 6, "rolled": 6, "scratches": 2}
  # Validation and test untouched.
  assert set(summary["counts"]["validation"].values()) == {3} and set(summary["counts"]["test"].values()) == {3}
  # The setting is part of the data stage's record; another class list is another split.
  rec = prepare_data.record(config)
  assert rec["settings"]["imbalance"]["scarce_classes"] == ["scratches"]
  config.imbalance.scarce_classes = ("scratches", "pitted")
  assert prepare_data.record(config) != rec
  cut = prepare_data.make_scarce(prepare_data.load_split(tmp_path / "data", "train"), config.imbalance)
  # The mean of the four kept classes is 6; scratches already has 2 and is never topped up.
  assert cut.counts() == {"crazing": 6, "inclusion": 6, "patches": 6, "pitted": 2, "rolled": 6, "scratches": 2}


def test_empty_scarce_classes_keep_the_ok_rule_and_the_record_of_earlier_runs(tmp_path):
  config = tiny_config(_write_images(tmp_path / "images", counts=(("NG", 10), ("OK", 30)), seed=0))
  config.imbalance.minority_ratio = 0.1
  train = prepare_data.load_images(config)
  config.imbalance.scarce_classes = ()
  before = prepare_data.make_scarce(train, config.imbalance)
  assert before.counts() == {"NG": 3, "OK": 30}  # every non-OK class to ratio x OK, as before the setting
  # A config without the key (built before it existed) gives the same split and the same record.
  rec = prepare_data.record(config)
  assert "scarce_classes" not in rec["settings"]["imbalance"]
  del config.imbalance["scarce_classes"]
  assert prepare_data.record(config) == rec
  assert prepare_data.make_scarce(train, config.imbalance).files == before.files


def test_scarce_classes_errors_name_the_setting(tmp_path):
  config = _six_classes(tmp_path)
  train = prepare_data.load_images(config)
  config.imbalance.scarce_classes = ("scratch",)
  with pytest.raises(ValueError, match=r"^config.imbalance.scarce_classes has unknown class\(es\) \['scratch'\]"):
    prepare_data.make_scarce(train, config.imbalance)
  config.imbalance.scarce_classes = tuple(train.class_names)
  with pytest.raises(ValueError, match="config.imbalance.scarce_classes=.* names every class"):
    prepare_data.make_scarce(train, config.imbalance)
  config.imbalance.scarce_classes = ("scratches",)
  config.imbalance.minority_ratio = 0.0
  with pytest.raises(ValueError, match="config.imbalance.minority_ratio=0.0: .* needs a ratio > 0"):
    prepare_data.make_scarce(train, config.imbalance)
  config.imbalance.minority_ratio = 0.1
  config.imbalance.ok_count = 5
  with pytest.raises(ValueError, match="config.imbalance.ok_count=5: .* set ok_count=0"):
    prepare_data.make_scarce(train, config.imbalance)
