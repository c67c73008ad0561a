"""Balanced-folder generation: files, manifest vs disk, provenance, shapes, bad input, atomic writes, command."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from test_train_autoencoder import MICRO  # pylint: disable=g-bad-import-order

from deepsmote_jax import cli
from deepsmote_jax.data.folder import ImageSet, load_image_folder, save_image_folder
from deepsmote_jax.export import export_autoencoder, load_autoencoder
from deepsmote_jax.jobs import generate
from deepsmote_jax.models.autoencoder import build_autoencoder
from deepsmote_jax.train import autoencoder as ae
from deepsmote_jax.train import loop

# One xdist worker runs this module (`--dist loadgroup`), so its module-scoped fixture is built once.
pytestmark = pytest.mark.xdist_group("jobs_generate")

COUNTS = {"free": 12, "blowhole": 5, "crack": 3}
SYNTHETIC_RE = re.compile(r"^synthetic_(?P<cls>.+)_(?P<idx>\d{5,})\.png$")


def _images(counts, seed=0, channels=1):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(len(counts)), list(counts.values()))
  base = rng.integers(40, 216, (len(counts), 16, 16, channels))
  noise = rng.integers(-30, 31, (len(labels), 16, 16, channels))
  return np.clip(base[labels] + noise, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """An image folder (12/5/3 images of 16x16 gray) and a MICRO model trained 2 epochs on it, exported."""
  root = tmp_path_factory.mktemp("generate")
  images, labels = _images(COUNTS)
  save_image_folder(images, labels, list(COUNTS), root / "data")
  cfg = ae.AETrainConfig(epochs=2, batch_size=8, steps_per_call=2, penalty_sample_size=6, compute_dtype="float32")
  result = ae.train_autoencoder(build_autoencoder(MICRO, seed=0), images, labels, cfg, progress=False)
  export_autoencoder(result.model, root / "autoencoder", class_names=list(COUNTS))
  model, _ = load_autoencoder(root / "autoencoder")
  image_set = load_image_folder(root / "data", image_size=16, channels=1)
  return {"root": root, "data": root / "data", "model_path": root / "autoencoder", "model": model, "set": image_set}


def _read_manifest(out):
  with open(out / "manifest.csv", newline="") as f:
    return list(csv.DictReader(f))


def _class_files(out):
  """Every file under the class folders, relative to out (grids/, data/ and the top-level files excluded)."""
  found = []
  for d in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in ("grids", "data")):
    found += [str(p.relative_to(out)) for p in d.rglob("*") if p.is_file()]
  return found


def _no_leftovers(parent, name):
  return not [p.name for p in parent.iterdir() if ".tmp-" in p.name or p.name.startswith(f"{name}.old-")]


def _check_folder(out, summary, image_set, *, model_size=16, channels=1):
  """The invariants every generated folder satisfies; returns the manifest rows."""
  rows = _read_manifest(out)
  assert list(rows[0]) == list(generate.MANIFEST_COLUMNS)
  files = [r["file"] for r in rows]
  assert len(files) == len(set(files))
  assert sorted(files) == sorted(_class_files(out))  # every file listed once, nothing unlisted
  per_class = {c: sum(r["class"] == c for r in rows) for c in image_set.class_names}
  assert per_class == summary["counts_written"]
  assert all(pathlib.PurePath(r["file"]).parts[0] == r["class"] for r in rows)
  class_of_input = dict(zip(image_set.files, np.asarray(image_set.class_names)[image_set.labels]))
  for r in rows:
    if r["synthetic"] == "1":
      m = SYNTHETIC_RE.match(os.path.basename(r["file"]))
      assert m and m.group("cls") == r["class"]
      assert class_of_input[r["base_file"]] == r["class"] == class_of_input[r["neighbor_file"]]
      assert 0.0 <= float(r["gap"]) < 1.0 and r["source"] == ""
      with Image.open(out / r["file"]) as im:
        assert im.size == (model_size, model_size) and im.mode == ("L" if channels == 1 else "RGB")
    else:
      assert r["synthetic"] == "0" and r["base_file"] == r["neighbor_file"] == r["gap"] == ""
      assert class_of_input[r["source"]] == r["class"]
  on_disk = json.loads((out / "summary.json").read_text())
  assert on_disk["counts_after"] == summary["counts_after"]
  for c, n_new in summary["counts_new"].items():
    assert (out / "grids" / f"{c}.png").is_file() == (n_new > 0)
  return rows


def test_balanced_folder_matches_manifest_and_imblearn_targets(setup, tmp_path):
  from imblearn.utils import check_sampling_strategy

  image_set = setup["set"]
  out = tmp_path / "balanced"
  with pytest.warns(UserWarning) as record:
    summary = generate.generate_dataset(
      setup["model"], image_set, out, source_root=setup["data"], seed=3, model_path=setup["model_path"]
    )
  messages = sorted(str(w.message) for w in record)
  assert [m for m in messages if "fewer than k_neighbors" in m] == [
    "class 'blowhole' has 5 samples, fewer than k_neighbors + 1 = 6; using k = 4 neighbours for it",
    "class 'crack' has 3 samples, fewer than k_neighbors + 1 = 6; using k = 2 neighbours for it",
  ]
  assert summary["warnings"] == messages
  rows = _check_folder(out, summary, image_set)
  y = np.asarray(image_set.class_names)[image_set.labels]
  targets = check_sampling_strategy("auto", y, "over-sampling")
  assert summary["counts_new"] == {c: int(targets.get(c, 0)) for c in image_set.class_names}
  assert summary["counts_after"] == {c: 12 for c in image_set.class_names}  # majority count
  assert summary["counts_written"] == summary["counts_after"]
  assert summary["k_used"] == {"blowhole": 4, "crack": 2}
  assert summary["kind"] == "smote" and summary["seed"] == 3 and summary["k_neighbors"] == 5
  assert summary["model"]["spec"] == MICRO.name and summary["model"]["path"] == str(setup["model_path"])
  assert summary["sampling_strategy"] == "auto" and summary["counts_before"] == image_set.counts()
  # Synthetic files are numbered 1..n per class; originals are byte copies.
  crack = sorted(r["file"] for r in rows if r["class"] == "crack" and r["synthetic"] == "1")
  assert crack == [f"crack/synthetic_crack_{i:05d}.png" for i in range(1, 10)]
  for r in rows:
    if r["synthetic"] == "0":
      assert (out / r["file"]).read_bytes() == (setup["data"] / r["source"]).read_bytes()
  grid = np.asarray(Image.open(out / "grids" / "crack.png"))
  assert grid.ndim == 2 and grid.shape[1] > 6 * 16
  assert _no_leftovers(tmp_path, "balanced")


def test_same_seed_same_output_and_overwrite_replaces_everything(setup, tmp_path):
  image_set = setup["set"]
  out = tmp_path / "out"
  kw = dict(source_root=setup["data"], k_neighbors=2, seed=1)
  first = generate.generate_dataset(setup["model"], image_set, out, **kw)
  manifest1 = (out / "manifest.csv").read_text()
  pixels1 = np.asarray(Image.open(out / "crack" / "synthetic_crack_00001.png"))
  (out / "free" / "stray.png").write_bytes(b"old")
  (out / "old_notes.txt").write_text("old")
  second = generate.generate_dataset(setup["model"], image_set, out, overwrite=True, **kw)
  assert (out / "manifest.csv").read_text() == manifest1
  np.testing.assert_array_equal(np.asarray(Image.open(out / "crack" / "synthetic_crack_00001.png")), pixels1)
  assert not (out / "free" / "stray.png").exists() and not (out / "old_notes.txt").exists()
  assert first["counts_after"] == second["counts_after"]
  _check_folder(out, second, image_set)
  generate.generate_dataset(setup["model"], image_set, out, overwrite=True, **{**kw, "seed": 2})
  assert (out / "manifest.csv").read_text() != manifest1
  assert _no_leftovers(tmp_path, "out")


def test_existing_output_without_overwrite_is_left_untouched(setup, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  with pytest.raises(ValueError, match="not empty.*overwrite"):
    generate.generate_dataset(setup["model"], setup["set"], out, source_root=setup["data"])
  assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
  assert _no_leftovers(tmp_path, "out")
  # An existing empty folder is fine.
  empty = tmp_path / "empty"
  empty.mkdir()
  summary = generate.generate_dataset(setup["model"], setup["set"], empty, source_root=setup["data"], k_neighbors=2)
  _check_folder(empty, summary, setup["set"])


def _memory_set(counts, channels=1):
  images, labels = _images(counts, seed=5, channels=channels)
  return ImageSet(
    images=images, labels=labels, class_names=list(counts), files=[f"mem/{i:04d}.png" for i in range(len(labels))]
  )


@pytest.mark.parametrize(
  "counts, strategy, kw, match",
  [
    ({"OK": 8, "NG": 1}, "auto", {}, "class 'NG' has a single image"),
    ({"OK": 8, "NG": 3}, "auto", {"strict": True}, "class 'NG' has 3 images, fewer than k_neighbors"),
    ({"OK": 8, "NG": 3}, {"NG": 2}, {}, "NG.*fewer than"),
    ({"OK": 8, "NG": 3}, {"BAD": 20}, {}, "BAD"),
    ({"OK": 8, "NG": 3}, "auto", {"copy_originals": "zip"}, "copy_originals"),
  ],
)
def test_bad_input_fails_before_any_output(setup, tmp_path, counts, strategy, kw, match):
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=match):
    generate.generate_dataset(setup["model"], _memory_set(counts), out, sampling_strategy=strategy, **kw)
  assert not out.exists() and _no_leftovers(tmp_path, "out")


def test_model_and_image_shape_mismatch_names_both(setup, tmp_path):
  with pytest.raises(ValueError, match=r"\(16, 16, 3\).*micro_16.*\(16, 16, 1\)"):
    generate.generate_dataset(setup["model"], _memory_set({"OK": 8, "NG": 4}, channels=3), tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_nan_codes_from_a_diverged_model_name_the_class(setup, tmp_path):
  graphdef, params, stats = loop.split_model(setup["model"])
  params = jax.tree.map(lambda p: p * jnp.nan, params)
  broken = loop.merge_model(graphdef, params, stats)
  with pytest.raises(ValueError, match="NaN/inf latent codes.*class 'NG'.*diverged"):
    generate.generate_dataset(broken, _memory_set({"OK": 8, "NG": 4}), tmp_path / "out")
  assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path, "out")


def test_interrupted_run_leaves_no_folder(setup, tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(generate, "synthesize", fail)
  with pytest.raises(KeyboardInterrupt):
    generate.generate_dataset(setup["model"], setup["set"], tmp_path / "out", source_root=setup["data"], k_neighbors=2)
  assert list(tmp_path.iterdir()) == []


def test_in_memory_set_writes_model_size_pngs_and_dict_strategy(setup, tmp_path):
  image_set = _memory_set({"OK": 10, "NG": 4})
  out = tmp_path / "out"
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # k=3 fits: no warning
    summary = generate.generate_dataset(
      setup["model"], image_set, out, sampling_strategy={"NG": 7}, k_neighbors=3, copy_originals="copy"
    )
  rows = _check_folder(out, summary, image_set)
  assert summary["counts_after"] == {"OK": 10, "NG": 7} and summary["counts_new"] == {"OK": 0, "NG": 3}
  originals = [r for r in rows if r["synthetic"] == "0"]
  assert len(originals) == 14 and originals[0]["file"] == "OK/mem_0000.png"
  first = np.asarray(Image.open(out / originals[0]["file"]))
  np.testing.assert_array_equal(first, image_set.images[0, ..., 0])


def test_link_and_none_modes(setup, tmp_path):
  linked = tmp_path / "linked"
  summary = generate.generate_dataset(
    setup["model"], setup["set"], linked, source_root=setup["data"], copy_originals="link", k_neighbors=2
  )
  rows = _check_folder(linked, summary, setup["set"])
  original = next(r for r in rows if r["synthetic"] == "0")
  assert os.path.samefile(linked / original["file"], setup["data"] / original["source"])
  bare = tmp_path / "bare"
  summary = generate.generate_dataset(setup["model"], setup["set"], bare, copy_originals="none", k_neighbors=2)
  rows = _check_folder(bare, summary, setup["set"])
  assert all(r["synthetic"] == "1" for r in rows)
  assert summary["counts_written"] == {"blowhole": 7, "crack": 9, "free": 0}
  assert summary["counts_after"] == {"blowhole": 12, "crack": 12, "free": 12}


def test_command_on_magnetic_tile_subset(setup, magnetic_tile, tmp_path, capsys):
  """`deepsmote generate` (scripts/generate.py): config.data and config.generate in, the balanced folder of the
  TRAINING split out (the split made with the config and kept as <workdir>/data)."""
  data = tmp_path / "tiles"
  for cls, n in {"free": 20, "blowhole": 6, "crack": 4}.items():
    (data / cls).mkdir(parents=True)
    for f in sorted((magnetic_tile / cls).glob("*.jpg"))[:n]:
      shutil.copy2(f, data / cls / f.name)
  out = tmp_path / "balanced"
  args = [
    "generate",
    "--config",
    "default",
    "--config.data.source=folder",
    f"--config.data.root={data}",
    "--config.generate.k_neighbors=3",
    "--config.generate.seed=0",
    "--config.model.preset=micro_16",
    "--config.model.channels=1",
    "--config.split.ratios=(0.7,0.15,0.15)",
    "--config.imbalance.ok_count=0",
    "--config.imbalance.minority_ratio=0",
    "--config.pipeline.positive_class=",
    "--model",
    str(setup["model_path"]),
    "--workdir",
    str(out),
  ]
  cli.main(args)
  summary = json.loads((out / "summary.json").read_text())
  printed = capsys.readouterr().out
  split = json.loads((out / "data" / "split_manifest.json").read_text())["splits"]
  train = set(split["train"])
  before = {c: sum(f.startswith(c + "/") for f in train) for c in ("blowhole", "crack", "free")}
  assert summary["counts_before"] == before and sum(before.values()) < 30  # the training split only
  most = max(before.values())
  assert re.search(rf"crack\s+{before['crack']}\s+{most - before['crack']}\s+{most}", printed)
  image_set = load_image_folder(data, image_size=16, channels=1)
  rows = _check_folder(out, summary, image_set)
  assert summary["counts_after"] == {"blowhole": most, "crack": most, "free": most}
  originals = [r for r in rows if r["synthetic"] == "0"]
  assert len(originals) == len(train) and all(r["file"].endswith(".jpg") for r in originals)  # copied as they are
  used = {r["source"] for r in originals} | {
    r[k] for r in rows if r["synthetic"] == "1" for k in ("base_file", "neighbor_file")
  }
  assert used <= train and {r["split"] for r in rows} == {"train"}
  assert summary["data_split"]["split"] == "train" and summary["data_split"]["kept_as"] == "data"
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:  # bad input: one line, exit code 2, no traceback
    cli.main(args)
  err = capsys.readouterr().err.strip().splitlines()
  assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "not empty" in err[0]
  with pytest.raises(ValueError, match="not empty"):  # --verbose keeps the exception (and its traceback)
    cli.main(args + ["--verbose"])
  cli.main(args + ["--overwrite", "--config.generate.sampling_strategy", '{"crack": 10}', "--copy_originals", "none"])
  written = json.loads((out / "summary.json").read_text())["counts_written"]
  assert written == {"blowhole": 0, "crack": 10 - before["crack"], "free": 0}
  # The same split again, given as --split: the same images are over-sampled; a split of other settings is refused.
  again = tmp_path / "again"
  cli.main([*args[:-1], str(again), "--split", str(out / "data")])
  assert json.loads((again / "summary.json").read_text())["counts_before"] == before
  capsys.readouterr()
  with pytest.raises(SystemExit):
    cli.main([*args[:-1], str(tmp_path / "other"), "--split", str(out / "data"), "--config.split.seed=1"])
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "config.split.seed=0, the config has 1" in err[0]


def test_original_names_for_memory_sets_and_patches(tmp_path):
  assert generate._png_name("blowhole/x.jpg#0_16", "blowhole") == "x_0_16.png"
  assert generate._png_name("elpv/0001.png", "NG") == "elpv_0001.png"
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "x.jpg").write_bytes(b"jpg")
  image_set = ImageSet(
    images=np.zeros((3, 16, 16, 1), np.uint8),
    labels=[0, 0, 0],
    class_names=["a"],
    files=["a/x.jpg", "a/x.jpg#0_0", "a/x.jpg#0_8"],
  )
  plan = generate._plan_originals(image_set, "copy", tmp_path)
  assert plan == [("a/x.jpg", str(tmp_path / "a" / "x.jpg")), ("a/x_0_0.png", None), ("a/x_0_8.png", None)]
  with pytest.raises(ValueError, match="not found under source_root"):
    generate._plan_originals(image_set.subset([0]), "copy", tmp_path / "elsewhere")


def _folder_bytes(out):
  """{path: bytes} of every file a generated folder holds but summary.json (it records times and the path)."""
  return {
    str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "summary.json"
  }


@pytest.mark.parametrize("copy_originals", ["png", "copy"])
def test_streamed_files_give_the_in_memory_output(setup, tmp_path, monkeypatch, copy_originals):
  """A streamed folder (files decoded when read) writes the same bytes as the folder's `ImageSet`; batch_size 4
  with 3 batches per chunk makes several encode, decode and PNG chunks and a padded last batch (20 images)."""
  monkeypatch.setattr(generate, "_CHUNK_BATCHES", 3)
  kw = dict(source_root=setup["data"], k_neighbors=2, seed=5, batch_size=4, copy_originals=copy_originals)
  in_memory = generate.generate_dataset(setup["model"], setup["set"], tmp_path / "memory", **kw)
  files = _streamed(setup)
  assert files.streamed and files.files == setup["set"].files and files.counts() == setup["set"].counts()
  streamed = generate.generate_dataset(setup["model"], files, tmp_path / "streamed", **kw)
  assert _folder_bytes(tmp_path / "streamed") == _folder_bytes(tmp_path / "memory")
  skip = ("out_dir", "created", "seconds")
  assert {k: v for k, v in streamed.items() if k not in skip} == {k: v for k, v in in_memory.items() if k not in skip}
  _check_folder(tmp_path / "streamed", streamed, setup["set"])


def test_chunked_encoding_equals_one_call(setup):
  """Codes encoded chunk by chunk (padded last batch included) equal one `encode_images` call over all images."""
  image_set = setup["set"]
  _, codes = generate._encode(setup["model"], image_set, batch_size=3)
  np.testing.assert_array_equal(codes, ae.encode_images(setup["model"], image_set.images, batch_size=3))
  _, streamed = generate._encode(setup["model"], _streamed(setup), batch_size=3)
  np.testing.assert_array_equal(streamed, codes)


def _streamed(setup, root=None):
  spec = setup["model"].spec
  return load_image_folder(root or setup["data"], image_size=spec.image_size, channels=spec.channels, stream=True)


def test_a_bad_streamed_file_fails_before_output(setup, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(setup["data"], data)
  next((data / "crack").iterdir()).write_bytes(b"not an image")
  with pytest.raises(Exception, match="(?i)image"):
    generate.generate_dataset(setup["model"], _streamed(setup, data), tmp_path / "out", k_neighbors=2)
  assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path, "out")


def test_residual_synthesis_is_the_base_plus_the_decoded_change(setup, tmp_path, monkeypatch):
  """'residual': every synthetic image is its base image (manifest's base_file) plus D(code) - D(base code); the
  chunked, streamed path gives the same bytes; a gap of 0 gives the base image itself."""
  model, image_set = setup["model"], setup["set"]
  monkeypatch.setattr(generate, "_CHUNK_BATCHES", 2)
  kw = dict(source_root=setup["data"], k_neighbors=2, seed=4, batch_size=3, synthesis="residual")
  summary = generate.generate_dataset(model, image_set, tmp_path / "res", **kw)
  assert summary["synthesis"] == "residual"
  rows = [r for r in _check_folder(tmp_path / "res", summary, image_set) if r["synthetic"] == "1"]
  file_row = {f: i for i, f in enumerate(image_set.files)}
  base = image_set.images[[file_row[r["base_file"]] for r in rows]].astype(np.float32)
  neighbor = image_set.images[[file_row[r["neighbor_file"]] for r in rows]]
  codes_base, codes_neighbor = ae.encode_images(model, base.astype(np.uint8)), ae.encode_images(model, neighbor)
  gaps = np.asarray([float(r["gap"]) for r in rows], np.float32)[:, None]
  codes = codes_base + gaps * (codes_neighbor - codes_base)
  change = ae.decode_codes(model, codes).astype(np.float32) - ae.decode_codes(model, codes_base)
  written = np.stack([np.asarray(Image.open(tmp_path / "res" / r["file"]))[..., None] for r in rows]).astype(float)
  inside = (base + change > 2) & (base + change < 253)  # away from the clip
  assert inside.mean() > 0.5
  np.testing.assert_allclose(written[inside], (base + change)[inside], atol=2.0)  # two roundings of D(.) to uint8
  assert not np.array_equal(written, base)  # SMOTE moved them
  base_u8 = base.astype(np.uint8)
  at_base = ae.synthesize(model, codes_base, synthesis="residual", base_codes=codes_base, base_images=base_u8)
  np.testing.assert_array_equal(at_base, base_u8)
  streamed = generate.generate_dataset(model, _streamed(setup), tmp_path / "streamed", **kw)
  assert streamed["counts_after"] == summary["counts_after"]
  assert _folder_bytes(tmp_path / "streamed") == _folder_bytes(tmp_path / "res")
  decoded = generate.generate_dataset(model, image_set, tmp_path / "dec", **{**kw, "synthesis": "decode"})
  assert decoded["synthesis"] == "decode"
  assert _folder_bytes(tmp_path / "dec") != _folder_bytes(tmp_path / "res")
  with pytest.raises(ValueError, match="synthesis must be one of"):
    generate.generate_dataset(model, image_set, tmp_path / "bad", **{**kw, "synthesis": "blend"})
  assert not (tmp_path / "bad").exists()
