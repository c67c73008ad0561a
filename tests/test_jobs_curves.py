"""deepsmote_jax.jobs.curves: metrics.jsonl read, plotted and replayed into TensorBoard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepsmote_jax.jobs import curves

RECORDS = [
  {"step": 2, "loss": 0.5, "train_acc": 0.75, "images_per_s": None, "time": 1.0},
  {"step": 4, "val_average_precision": 0.8, "val_neg_loss": -0.6, "val_best_step": 4},
  {"step": 4, "loss": 0.4, "train_acc": 0.875, "images_per_s": 100.0, "time": 2.0},
  {"step": 8, "val_average_precision": 0.7, "val_neg_loss": -0.5, "val_best_step": 4, "val_x_per_class": [1, 2]},
  {"step": 8, "loss": float("nan"), "train_acc": 1.0, "images_per_s": 90.0, "time": 3.0},
]


def _write(path, records, tail=""):
  path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
  return path


def test_scalars_skip_bookkeeping_lists_and_non_finite(tmp_path):
  records = curves.read_jsonl(_write(tmp_path / "metrics.jsonl", RECORDS, tail='{"step": 9, "lo'))
  assert len(records) == len(RECORDS)  # the torn last line of a killed run is dropped
  series = curves.scalars(records)
  assert list(series) == ["loss", "train_acc", "val_average_precision", "val_neg_loss"]
  steps, values = series["loss"]
  assert steps.tolist() == [2, 4] and values.tolist() == [0.5, 0.4]
  assert curves.best_step(records) == 4 and curves.best_step(records, {"best_step": 8}) == 8
  assert curves.best_step([{"step": 1, "loss": 1.0}]) is None
  assert curves.read_jsonl(tmp_path / "absent.jsonl") == []


def test_plot_file_writes_a_png_with_the_summary_best_step(tmp_path):
  jsonl = _write(tmp_path / "metrics.jsonl", RECORDS)
  (tmp_path / "train_summary.json").write_text(json.dumps({"best_step": 4}))
  out = curves.plot_file(jsonl, tmp_path / "curves.png", "run")
  assert out["best_step"] == 4 and out["keys"][0] == "loss"
  assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert curves.plot_run([], tmp_path / "none.png", title="", best=None) is None
  assert not (tmp_path / "none.png").exists()


def test_replay_tensorboard_round_trip_and_rerun(tmp_path):
  pytest.importorskip("clu", reason="clu (the data extra) writes the TensorBoard events")
  tf = pytest.importorskip("tensorflow")
  pytest.importorskip("tensorboard")
  logdir = tmp_path / "tb"
  for _ in range(2):  # a rerun replaces the events instead of adding a second copy
    info = curves.replay_tensorboard(RECORDS, logdir)
  events = list(logdir.glob("events.out.tfevents.*"))
  assert len(events) == 1 and info["scalars"] == 9
  got = {}
  for e in tf.compat.v1.train.summary_iterator(str(events[0])):
    for v in e.summary.value:
      got[(v.tag, e.step)] = float(tf.make_ndarray(v.tensor))
  want = {(k, int(s)): v for k, (st, vs) in curves.scalars(RECORDS).items() for s, v in zip(st, vs)}
  assert got.keys() == want.keys()
  np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-6)
