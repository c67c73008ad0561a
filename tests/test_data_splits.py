"""Grouped, stratified, seeded splits and manifests."""

from __future__ import annotations

import numpy as np
import pytest

from deepsmote_jax.data import splits
from deepsmote_jax.data.folder import ImageSet, load_image_folder


def _toy(groups_per_class=(20, 6), per_group=3, prefix="exp{e}_num_{g}"):
  files, labels = [], []
  gid = 0
  for c, n in enumerate(groups_per_class):
    for _ in range(n):
      for e in range(1, per_group + 1):
        files.append(f"c{c}/" + prefix.format(e=e, g=gid) + ".jpg")
        labels.append(c)
      gid += 1
  n = len(files)
  return ImageSet(np.zeros((n, 2, 2, 1), np.uint8), labels, ["ok", "ng"], files)


def test_group_keys():
  files = ["a/exp1_num_12.jpg", "b/exp3_num_12.png", "a/x.png#0_16", "a/x.png"]
  assert splits.group_keys(files) == ["exp1_num_12", "exp3_num_12", "x", "x"]
  assert splits.group_keys(files[:2], "magnetic_tile") == ["12", "12"]
  assert splits.group_keys(files[:2], r"exp\d") == ["exp1", "exp3"]
  with pytest.raises(ValueError, match="x.png.*does not match"):
    splits.group_keys(files, "magnetic_tile")


def test_grouped_stratified_split_deterministic():
  ds = _toy()
  out = splits.split_image_set(ds, (0.6, 0.2, 0.2), seed=3, group_pattern="magnetic_tile")
  assert list(out) == ["train", "validation", "test"]
  assert sum(len(v) for v in out.values()) == len(ds)
  all_files = sorted(f for v in out.values() for f in v.files)
  assert all_files == sorted(ds.files)
  keys = {k: set(splits.group_keys(v.files, "magnetic_tile")) for k, v in out.items()}
  assert not (keys["train"] & keys["validation"]) and not (keys["train"] & keys["test"])
  assert not (keys["validation"] & keys["test"])
  assert out["train"].counts() == {"ok": 36, "ng": 12} and out["test"].counts()["ng"] >= 3
  again = splits.split_image_set(ds, (0.6, 0.2, 0.2), seed=3, group_pattern="magnetic_tile")
  assert all(again[k].files == out[k].files for k in out)
  other = splits.split_image_set(ds, (0.6, 0.2, 0.2), seed=4, group_pattern="magnetic_tile")
  assert other["test"].files != out["test"].files
  # Without grouping the exposures of one tile are spread over the splits.
  loose = splits.split_image_set(ds, (0.6, 0.2, 0.2), seed=3)
  lk = {k: set(splits.group_keys(v.files, "magnetic_tile")) for k, v in loose.items()}
  assert lk["train"] & lk["test"]


def test_empty_class_after_split_is_clear_error():
  ds = _toy(groups_per_class=(20, 2))
  with pytest.raises(ValueError, match="class 'ng' has no images in split 'test'"):
    splits.split_image_set(ds, (0.8, 0.1, 0.1), group_pattern="magnetic_tile")
  two = splits.split_image_set(ds, (0.5, 0.5), group_pattern="magnetic_tile")
  assert list(two) == ["train", "test"] and two["test"].counts()["ng"] == 3
  with pytest.raises(ValueError, match="sum to 1"):
    splits.split_image_set(ds, (0.8, 0.1))


def test_manifest_round_trip(tmp_path):
  ds = _toy()
  out = splits.split_image_set(ds, (0.5, 0.5), seed=1)
  splits.save_manifest(out, tmp_path / "m.json", seed=1)
  back = splits.apply_manifest(ds, tmp_path / "m.json")
  assert {k: v.files for k, v in back.items()} == {k: v.files for k, v in out.items()}
  with pytest.raises(ValueError, match="not in the data"):
    splits.apply_manifest(ds.subset(np.arange(5)), tmp_path / "m.json")


def test_magnetic_tile_split_by_tile_id(magnetic_tile):
  ds = load_image_folder(magnetic_tile, image_size=4, channels=1)
  out = splits.split_image_set(ds, (0.7, 0.15, 0.15), seed=0, group_pattern="magnetic_tile")
  keys = {k: set(splits.group_keys(v.files, "magnetic_tile")) for k, v in out.items()}
  assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["validation"])
  assert not (keys["validation"] & keys["test"])
  assert sum(len(v) for v in out.values()) == len(ds) == 1344
  for name, part in out.items():
    assert min(part.counts().values()) >= 4, (name, part.counts())
  assert abs(out["train"].counts()["free"] - 0.7 * 952) <= 3
