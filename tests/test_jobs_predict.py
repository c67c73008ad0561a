"""predict on an unlabelled folder: the model's preprocessing, the saved threshold, counted skips, tiled models."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PIL import Image

from deepsmote_jax.export import export_classifier
from deepsmote_jax.jobs import predict as predict_job
from deepsmote_jax.models.classifiers import build_classifier
from deepsmote_jax.train.classifier import predict_proba

CLASSES = ["NG", "OK"]


def _export(path, *, tiles=None):
  model = build_classifier("small_cnn", 2, in_channels=1, seed=5)
  extra = {"tiles": tiles} if tiles else None
  export_classifier(model, path, name="small_cnn", class_names=CLASSES, image_size=32, in_channels=1, extra=extra)
  return model


def _folder(root, n=5, size=32, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
  (root / "line2").mkdir(parents=True)
  for i, im in enumerate(images):
    Image.fromarray(im).save(root / ("line2" if i % 2 else "") / f"part{i}.png")
  return images


def _rows(path):
  return list(csv.DictReader(open(path, newline="")))


def test_scores_every_file_with_the_models_preprocessing_and_counts_a_bad_file(tmp_path):
  model = _export(tmp_path / "model")
  images = _folder(tmp_path / "images")
  (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
  summary = predict_job.predict_folder(tmp_path / "model", tmp_path / "images", tmp_path / "out.csv")
  rows = _rows(tmp_path / "out.csv")
  assert [r["file"] for r in rows] == [
    "broken.png",
    "line2/part1.png",
    "line2/part3.png",
    "part0.png",
    "part2.png",
    "part4.png",
  ]
  assert rows[0]["status"].startswith("skipped: ") and rows[0]["p_NG"] == ""
  assert summary["skipped"] == 1 and summary["scored"] == 5 and summary["threshold_p"] is None
  want = predict_proba(model, images[..., None], in_channels=1)
  by_file = {r["file"]: r for r in rows}
  for i in range(5):
    r = by_file[("line2/" if i % 2 else "") + f"part{i}.png"]
    np.testing.assert_allclose(float(r["p_NG"]), want[i, 0], rtol=1e-5)
    assert r["argmax"] == CLASSES[int(want[i].argmax())] and r["NG_at_threshold"] == ""
  with pytest.raises(ValueError, match="broken.png"):
    predict_job.predict_folder(tmp_path / "model", tmp_path / "images", tmp_path / "o2.csv", on_error="raise")
  assert not (tmp_path / "o2.csv").exists()


def test_saved_threshold_decides_and_a_given_one_overrides(tmp_path):
  model = _export(tmp_path / "model")
  images = _folder(tmp_path / "images")
  p = predict_proba(model, images[..., None], in_channels=1)[:, 0]
  cut = float(np.median(p))
  logit = math.log(cut) - math.log1p(-cut)
  predict_job.save_decision(
    tmp_path / "model", "NG", {"rule": "min_ng", "value_score": logit, "value": cut, "scale": "logit"}
  )
  summary = predict_job.predict_folder(tmp_path / "model", tmp_path / "images", tmp_path / "out.csv")
  flagged = {r["file"]: r["NG_at_threshold"] == "True" for r in _rows(tmp_path / "out.csv")}
  assert summary["threshold_source"] == "saved (min_ng rule)" and summary["flagged_at_threshold"] == int(
    (p >= cut).sum()
  )
  assert sum(flagged.values()) == int((p >= cut).sum()) >= 1
  summary = predict_job.predict_folder(tmp_path / "model", tmp_path / "images", tmp_path / "out.csv", threshold=1e-9)
  assert summary["threshold_source"] == "given" and summary["flagged_at_threshold"] == 5
  with pytest.raises(ValueError, match="--threshold"):
    predict_job.predict_folder(tmp_path / "model", tmp_path / "images", tmp_path / "x.csv", threshold=1.5)
  with pytest.raises(ValueError, match="positive class 'scratch'"):
    predict_job.predict_folder(tmp_path / "model", tmp_path / "images", tmp_path / "x.csv", positive_class="scratch")


def test_tiled_model_pools_its_top_tiles_at_native_resolution(tmp_path):
  tiles = {"mode": "tiles", "size": 32, "stride": 32, "top_k": 2, "min_std": 0.0}
  model = _export(tmp_path / "model", tiles=tiles)
  big = _folder(tmp_path / "images", n=2, size=64)
  predict_job.predict_folder(tmp_path / "model", tmp_path / "images", tmp_path / "out.csv")
  rows = {r["file"]: r for r in _rows(tmp_path / "out.csv")}
  for name, image in [("part0.png", big[0]), ("line2/part1.png", big[1])]:
    quads = np.stack([image[y : y + 32, x : x + 32] for y in (0, 32) for x in (0, 32)])[..., None]
    ng = np.sort(predict_proba(model, quads, in_channels=1)[:, 0])[::-1]
    np.testing.assert_allclose(float(rows[name]["p_NG"]), ng[:2].mean(), rtol=1e-5)


def test_folder_problems_are_named(tmp_path):
  _export(tmp_path / "model")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="holds no image files"):
    predict_job.predict_folder(tmp_path / "model", tmp_path / "empty", tmp_path / "out.csv")
  with pytest.raises(ValueError, match="does not exist"):
    predict_job.predict_folder(tmp_path / "model", tmp_path / "nope", tmp_path / "out.csv")
