"""The one-class baseline: an OK-only encoder/decoder whose reconstruction error scores defects."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from test_jobs_pipeline import _write_images, tiny_config
from test_jobs_tiled import tiled_config, write_parts

from deepsmote_jax import evaluation, metrics
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.export import load_autoencoder
from deepsmote_jax.jobs import anomaly, pipeline, prepare_data
from deepsmote_jax.jobs import predict as predict_job
from deepsmote_jax.jobs.pipeline import run_pipeline


def test_error_to_proba_is_monotone_and_flags_above_the_ok_quantile():
  rng = np.random.default_rng(0)
  ok_val = rng.lognormal(-5, 0.3, 200)
  errors = np.sort(rng.lognormal(-4.5, 0.6, 300))
  proba = anomaly.error_to_proba(errors, ok_val, ["NG", "OK", "other"], ok="OK", ng="NG")
  assert proba.shape == (300, 3)
  assert np.all(np.diff(proba[:, 0]) >= 0)  # rank-preserving: curves see the raw ranking
  np.testing.assert_allclose(proba[:, 0] + proba[:, 1], 1.0, rtol=1e-6)
  assert np.all(proba[:, 2] == 0)
  flagged = proba.argmax(1) == 0
  np.testing.assert_array_equal(flagged, errors > np.quantile(ok_val, anomaly.OK_QUANTILE))
  # The validation OK images themselves: the argmax decision flags about 1 - OK_QUANTILE of them.
  ok_flag = anomaly.error_to_proba(ok_val, ok_val, ["NG", "OK"], ok="OK", ng="NG").argmax(1) == 0
  assert abs(ok_flag.mean() - (1 - anomaly.OK_QUANTILE)) < 0.02
  with pytest.raises(ValueError, match="validation 'OK'"):
    anomaly.error_to_proba(errors, ok_val[:1], ["NG", "OK"], ok="OK", ng="NG")


def test_window_error_is_the_largest_window_mean():
  rng = np.random.default_rng(0)
  sq = rng.random((3, 9, 7))
  for w in (1, 2, 3, 7):
    brute = [max(sq[n, y : y + w, x : x + w].mean() for y in range(10 - w) for x in range(8 - w)) for n in range(3)]
    np.testing.assert_allclose(anomaly.window_error(sq, w), brute, rtol=1e-12)
  np.testing.assert_allclose(anomaly.window_error(sq, 0), sq.reshape(3, -1).mean(1))
  # One bad pixel in a 64x64 image: diluted 4096-fold by the image mean, 16-fold by a 4x4 window.
  spot = np.zeros((1, 64, 64))
  spot[0, 10, 20] = 1.0
  assert anomaly.window_error(spot, 0)[0] == pytest.approx(1 / 4096)
  assert anomaly.window_error(spot, 4)[0] == pytest.approx(1 / 16)


def test_ok_only_set_keeps_only_ok_images():
  images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4, 1)
  s = ImageSet(images, np.array([0, 1, 1, 0, 1, 0], np.int32), ["NG", "OK"], [f"f{i}" for i in range(6)])
  ok = anomaly.ok_only(s, "OK")
  assert ok.class_names == ["OK"] and ok.files == ["f1", "f2", "f4"]
  np.testing.assert_array_equal(ok.images, images[[1, 2, 4]])
  with pytest.raises(ValueError, match="config.imbalance.ok_class='good'"):
    anomaly.ok_only(s, "good")


@pytest.mark.slow
def test_one_class_run_scores_dents_above_ok_and_is_evaluated_like_a_classifier(tmp_path):
  config = tiny_config(_write_images(tmp_path / "images", counts=(("NG", 12), ("OK", 48))))
  config.train.epochs = 6
  config.imbalance.ok_class = "OK"
  work = tmp_path / "run"
  prepare_data.run(config, work / "data")
  info = anomaly.train_one(config, work, "anomaly_ae", 0, work / "classifiers" / "anomaly_ae_seed0", progress=False)
  assert info["train_counts"] == {"OK": int((prepare_data.load_split(work / "data", "train").labels == 1).sum())}
  pred = np.load(work / "classifiers" / "anomaly_ae_seed0" / "predictions.npz", allow_pickle=True)
  names = list(pred["class_names"])
  ng = names.index("NG")
  # A dark dent is not in any OK image: it reconstructs worse than the OK texture.
  test_err, labels = pred["test_error"], pred["test_labels"]
  assert test_err[labels == ng].mean() > test_err[labels != ng].mean()
  result = evaluation.evaluate(
    pred["test_labels"],
    pred["test_proba"],
    names,
    positive_class="NG",
    val_true=pred["val_labels"],
    val_scores=pred["val_proba"],
  )
  assert result["roc_auc"] > 0.75, result["roc_auc"]


@pytest.mark.slow
def test_tiled_one_class_run_finds_thin_cracks_per_image(tmp_path):
  # The pipeline accepts the one-class baseline with tiles: an OK-only autoencoder on the OK parts' native
  # tiles, each part scored by its worst tile, every row and metric per part.
  root = write_parts(tmp_path / "parts")
  config = tiled_config(root, methods=("anomaly_ae",))
  config.train.epochs = 4
  config.pipeline.anomaly_window = 2
  work = tmp_path / "run"
  summary = run_pipeline(config, work, progress=False)
  assert "anomaly_ae" in summary["methods"]
  run = work / "classifiers" / "anomaly_ae_seed0"
  train = prepare_data.load_tiled_split(work / "data", "train")
  ok_tiles = int((train.image_labels[train.bag] == 1).sum())
  assert json.loads((run / "run.json").read_text())["train_counts"] == {"OK": ok_tiles}
  val, test = (prepare_data.load_tiled_split(work / "data", n) for n in ("validation", "test"))
  with np.load(run / "predictions.npz", allow_pickle=True) as z:
    assert z["val_proba"].shape == (len(val.image_files), 2) and z["test_proba"].shape == (len(test.image_files), 2)
    np.testing.assert_array_equal(z["test_labels"], test.image_labels)
    y = np.concatenate([z["val_labels"], z["test_labels"]]) == 0
    err = np.concatenate([z["val_error"], z["test_error"]])
    p_ng = np.concatenate([z["val_proba"][:, 0], z["test_proba"][:, 0]])
  # An image's error is its worst tile's (top_k = 1), a tile's its worst 2x2 window's, recomputed here from the
  # exported autoencoder.
  model, _ = load_autoencoder(run / "autoencoder_ok" / "autoencoder")
  tile_err = anomaly.reconstruction_error(model, test.tiles.images, 2)
  np.testing.assert_allclose(
    err[len(val.image_files) :], [tile_err[test.bag == i].max() for i in range(len(test.image_files))], rtol=1e-5
  )
  auc = metrics.roc_auc(y, err)
  print(f"image-level ROC AUC of the tiled one-class baseline: {auc:.3f}")
  assert auc >= 0.9, f"a 1 px crack on a smooth texture: image-level ROC AUC {auc:.2f} on 20 held-out parts"
  rows = list(csv.DictReader((run / predict_job.PREDICTIONS_CSV).open()))
  assert [r["file"] for r in rows] == val.image_files + test.image_files
  np.testing.assert_allclose([float(r["p_NG"]) for r in rows], p_ng, atol=1e-5)
  report = json.loads((work / "report" / "report.json").read_text())["runs"]["anomaly_ae_seed0"]
  flagged = [r["NG_at_threshold"] == "True" for r in rows if r["split"] == "test"]
  assert sum(flagged) == report["threshold"]["test"]["n_flagged"]


def test_anomaly_window_out_of_range_is_one_line_naming_the_setting(tmp_path):
  root = write_parts(tmp_path / "parts", n_ok=4, n_ng=4)
  c = tiled_config(root, methods=("anomaly_ae",))
  for bad in (-1, 17):  # micro_16: 16 px (a float is refused by the ConfigDict itself)
    c.pipeline.anomaly_window = bad
    with pytest.raises(ValueError, match=r"^config\.pipeline\.anomaly_window=.*: pixels in \[0, 16\]"):
      pipeline.validate_config(c)
