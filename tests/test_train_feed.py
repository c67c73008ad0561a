"""Streamed training (`train.feed`): the same batches and penalty samples as in memory, each file read once."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from PIL import Image

from deepsmote_jax.data import image_io
from deepsmote_jax.data.file_images import FileImages
from deepsmote_jax.models.autoencoder import build_autoencoder
from deepsmote_jax.train import autoencoder as ae
from deepsmote_jax.train import feed
from deepsmote_jax.train import mesh as mesh_lib
from tests.test_train_autoencoder import CFG, MICRO, _images


def _write_pngs(tmp_path, images) -> list[str]:
  names = []
  for i, img in enumerate(images):
    names.append(f"{i:03d}.png")
    Image.fromarray(img[..., 0]).save(tmp_path / names[-1])
  return names


def _assert_trees_close(a, b, **tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


@pytest.mark.parametrize("penalty", ["reference", "paper"])
def test_streamed_training_equals_in_memory(tmp_path, penalty):
  """Files streamed through tf.data train to the same parameters as the same images on the device."""
  images, labels = _images()
  source = FileImages(_write_pngs(tmp_path, images), root=tmp_path, image_size=16, channels=1)
  cfg = dataclasses.replace(CFG, penalty=penalty)
  runs = []
  for data in (images, source):
    model = build_autoencoder(MICRO, seed=0)
    runs.append(ae.train_autoencoder(model, data, labels, cfg, progress=False))
  assert runs[0].summary["final_step"] == runs[1].summary["final_step"] == 6
  _assert_trees_close(runs[0].state.params, runs[1].state.params, rtol=1e-5, atol=1e-6)
  _assert_trees_close(runs[0].state.batch_stats, runs[1].state.batch_stats, rtol=1e-5, atol=1e-6)


def test_streamed_penalty_samples_are_the_in_memory_draws():
  """The host draws the class and images the jitted step would draw, step for step."""
  _, labels = _images(n=40)
  labels = np.where(np.arange(40) < 30, 0, np.where(np.arange(40) < 37, 1, 2)).astype(np.int32)
  cfg = dataclasses.replace(CFG, penalty_sample_size=5, penalty_classes="inverse_count", seed=7)
  plan = ae.PenaltySamplePlan(labels, 3, cfg, padded_size=6)
  drawn = plan(10, 20)
  table, counts = ae.class_index_table(labels, 3)
  key = jax.random.key(cfg.seed)
  classes = []
  for i, s in enumerate(range(10, 30)):
    c, idx, valid, _ = ae.sample_class(
      jax.random.fold_in(key, np.int32(s)), table, counts, 5, 6, classes="inverse_count"
    )
    np.testing.assert_array_equal(drawn["class_index"][i], np.asarray(idx))
    np.testing.assert_array_equal(drawn["class_valid"][i], np.asarray(valid))
    members = drawn["class_index"][i][drawn["class_valid"][i]]
    assert len(set(members.tolist())) == len(members)  # without replacement
    assert (labels[members] == int(c)).all()
    classes.append(int(c))
  assert len(set(classes)) > 1


def test_streamed_class_frequencies_follow_inverse_count():
  """Over many steps the host-drawn classes follow 1/count among classes with >= 2 images."""
  labels = np.repeat([0, 1, 2, 3], [40, 10, 5, 1]).astype(np.int32)
  cfg = dataclasses.replace(CFG, penalty_sample_size=4, penalty_classes="inverse_count")
  drawn = ae.PenaltySamplePlan(labels, 4, cfg, padded_size=4)(0, 4000)
  first = drawn["class_index"][:, 0]
  freq = np.bincount(labels[first], minlength=4) / len(first)
  want = np.array([1 / 40, 1 / 10, 1 / 5, 0.0])
  np.testing.assert_allclose(freq, want / want.sum(), atol=0.03)
  assert freq[3] == 0


def test_every_training_image_is_read_once_per_epoch_across_processes():
  """Two processes' rows of each batch are disjoint and together read every image once per epoch."""
  plan = ae.BatchPlan(23, 8, seed=3)
  per_process = [np.arange(0, 4), np.arange(4, 8)]  # a 2-process mesh's rows of a batch of 8
  seen = []
  for rows in per_process:
    for step in range(plan.steps_per_epoch):
      batch = plan(plan.steps_per_epoch + step, 1)  # epoch 1
      seen += batch["index"][0, rows][batch["mask"][0, rows]].tolist()
  assert sorted(seen) == list(range(23))


def test_local_rows_on_one_process_are_all_rows():
  np.testing.assert_array_equal(feed.local_rows(mesh_lib.make_mesh(), 8), np.arange(8))


def test_fed_plan_fills_only_this_process_rows(tmp_path):
  images = np.maximum(_images(n=10)[0], 1)  # no zero pixel: a zero row below can only be an unread one
  plan = ae.BatchPlan(10, 4, seed=0)
  source = FileImages(_write_pngs(tmp_path, images), root=tmp_path, image_size=16, channels=1)
  fed = feed.FedPlan(plan, source, mesh=mesh_lib.make_mesh(), total_steps=6, images_of={"index": "image"})
  fed._rows = {"index": np.array([1, 3])}  # as a process holding rows 1 and 3 sees it
  out = fed(2, 2)
  want = plan(2, 2)["index"]
  np.testing.assert_array_equal(out["image"][:, [1, 3]], images[want[:, [1, 3]]])
  assert not out["image"][:, [0, 2]].any()
  assert "index" not in out and out["mask"].shape == (2, 4)


def test_fed_plan_close_frees_the_decoded_image_cache(tmp_path):
  """Two epochs through the cache read the in-memory batches; `close` (as at the end of a run) frees the cache."""
  images = _images(n=10)[0]
  cache_dir = tmp_path / "cache"
  cache_dir.mkdir()
  source = FileImages(_write_pngs(tmp_path, images), root=tmp_path, image_size=16, channels=1, stream_cache=cache_dir)
  plan = ae.BatchPlan(10, 4, seed=0)
  fed = feed.FedPlan(plan, source, mesh=mesh_lib.make_mesh(), total_steps=8, images_of={"index": "image"})
  for first in range(0, 8, 2):
    np.testing.assert_array_equal(fed(first, 2)["image"], images[plan(first, 2)["index"]])
  cache = fed._iterator.cache
  assert cache.cached().all() and not cache.closed
  fed.close()
  assert cache.closed and fed._iterator is None and not list(cache_dir.iterdir())


def test_streamed_resume_equals_uninterrupted(tmp_path):
  images, labels = _images()
  source = FileImages(_write_pngs(tmp_path, images), root=tmp_path, image_size=16, channels=1)

  def run(name, **kw):
    model = build_autoencoder(MICRO, seed=0)
    return ae.train_autoencoder(
      model, source, labels, CFG, workdir=str(tmp_path / name), progress=False, checkpoint_every_steps=2, **kw
    )

  full = run("full")
  run("killed", stop_after_steps=4)
  resumed = run("killed", resume=True)
  assert resumed.summary["steps_run"] == 2
  _assert_trees_close(full.state.params, resumed.state.params, rtol=0, atol=0)


def test_a_source_with_the_wrong_image_shape_is_refused(tmp_path):
  images, labels = _images()
  source = FileImages(_write_pngs(tmp_path, images), root=tmp_path, image_size=32, channels=1)
  with pytest.raises(ValueError, match=r"\(32, 32, 1\) but the model 'micro_16' expects \(16, 16, 1\)"):
    ae.prepare_training(build_autoencoder(MICRO, seed=0), source, labels, CFG)


@pytest.mark.parametrize("cache", ["dir", "off"])
def test_held_out_images_streamed_decode_each_file_once(tmp_path, monkeypatch, cache):
  """Scored at every evaluation, streamed validation images are decoded at the first pass only (the padding
  row too: once), then read back from the decoded-image cache; with the cache off every pass decodes."""
  images, labels = _images(n=11)
  setting = str(tmp_path / "cache") if cache == "dir" else "off"
  (tmp_path / "cache").mkdir()
  source = FileImages(_write_pngs(tmp_path, images), root=tmp_path, image_size=16, channels=1, stream_cache=setting)
  decoded = []
  real = image_io.decode_image
  monkeypatch.setattr(image_io, "decode_image", lambda path, *a, **k: decoded.append(path) or real(path, *a, **k))
  held_out = feed.HeldOutImages(source, mesh_lib.make_mesh(), chunk=4, labels=labels)
  passes = [[np.asarray(x) for x, _ in held_out] for _ in range(3)]
  for chunks in passes[1:]:
    for a, b in zip(passes[0], chunks, strict=True):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(np.concatenate(passes[0])[:11], images)
  if cache == "dir":
    assert sorted(decoded) == sorted(set(decoded)) and len(decoded) == 11
  else:
    assert len(decoded) == 3 * 12  # 11 images and the padding row, at each of the 3 passes


def test_held_out_images_streamed_give_the_in_memory_chunks(tmp_path):
  """Validation images read chunk by chunk from files equal the chunks placed once from memory (padding too)."""
  images, labels = _images(n=11)
  source = FileImages(_write_pngs(tmp_path, images), root=tmp_path, image_size=16, channels=1)
  mesh = mesh_lib.make_mesh()
  placed = list(feed.HeldOutImages(images, mesh, chunk=4, labels=labels))
  streamed = list(feed.HeldOutImages(source, mesh, chunk=4, labels=labels))
  assert len(placed) == len(streamed) == 3
  for (xa, ya), (xb, yb) in zip(placed, streamed, strict=True):
    np.testing.assert_array_equal(np.asarray(xa), np.asarray(xb))
    np.testing.assert_array_equal(np.asarray(ya), np.asarray(yb))
  assert np.asarray(placed[-1][1]).tolist() == [labels[8], labels[9], labels[10], -1]
  with pytest.raises(ValueError, match="the validation set is empty"):
    feed.HeldOutImages(images[:0], mesh, chunk=4)
