"""The report's synthetic-image section on a hand-made workdir: copies flagged as memorised, a collapsed set at the
top, the real-only classifier's features (or 32x32 pixels without it)."""

from __future__ import annotations

import csv
import json
import shutil

import jax
import numpy as np
from flax import nnx
from PIL import Image

from deepsmote_jax import config_lib, files
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.export import export_classifier
from deepsmote_jax.jobs import prepare_data, synthetic_report
from deepsmote_jax.models.classifiers import SmallCNN
from deepsmote_jax.train import loop

CLASSES = ["NG", "OK"]


def _split(rng, n_ng, n_ok):
  labels = np.array([0] * n_ng + [1] * n_ok, np.int32)
  base = np.where(labels[:, None, None, None] == 0, 60, 190)
  images = np.clip(base + rng.integers(-50, 51, (len(labels), 16, 16, 1)), 0, 255).astype(np.uint8)
  return ImageSet(images=images, labels=labels, class_names=CLASSES, files=[f"f{i}.png" for i in range(len(labels))])


def _dataset(folder, images):
  """A generated dataset folder as `generate_dataset` writes it: NG synthetic images and manifest.csv."""
  (folder / "NG").mkdir(parents=True)
  rows = []
  for i, img in enumerate(images):
    name = f"NG/synthetic_NG_{i + 1:05d}.png"
    Image.fromarray(img[..., 0]).save(folder / name)
    rows.append({"file": name, "class": "NG", "synthetic": 1})
  with (folder / "manifest.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["file", "class", "synthetic"])
    writer.writeheader()
    writer.writerows(rows)


def _workdir(tmp_path):
  rng = np.random.default_rng(0)
  work = tmp_path / "run"
  (work / "data").mkdir(parents=True)
  train = _split(rng, 12, 30)
  prepare_data.save_split(work / "data" / "train.npz", train)
  prepare_data.save_split(work / "data" / "validation.npz", _split(rng, 4, 8))
  ng = train.images[train.labels == 0]
  _dataset(work / "generate_reference" / "dataset", ng[rng.integers(0, len(ng), 18)])  # copies of real NG
  _dataset(work / "generate_paper" / "dataset", np.repeat(np.full_like(ng[:1], 90), 18, axis=0))  # one image
  files.atomic_write_json(work / "generate_reference" / "dataset" / "summary.json", {"synthesis": "residual"})
  validation = {
    "select_metric": "psnr",
    "step": 6,
    "psnr": 21.5,
    "ssim": 0.61,
    "psnr_per_class": {"NG": 19.0, "OK": 24.0},
    "ssim_per_class": {"NG": 0.5, "OK": 0.72},
  }
  files.atomic_write_json(work / "autoencoder_reference" / "train_summary.json", {"validation": validation})
  config = config_lib.autoencoder_config(preset="micro_16", channels=1, epochs=1, batch_size=8)
  config.pipeline.penalties = ("reference", "paper")
  config.pipeline.seeds = (3,)
  return work, config


def _small_cnn():
  """A width-4 SmallCNN with random weights, built from its shapes (its jitted initialisation takes tens of
  seconds on a loaded CPU)."""
  rng = np.random.default_rng(0)
  graphdef, params, stats = loop.split_model(
    nnx.eval_shape(lambda: SmallCNN(2, in_channels=1, width=4, rngs=nnx.Rngs(0)))
  )
  params = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32), params)
  stats = jax.tree_util.tree_map_with_path(  # BatchNorm statistics: means 0, variances 1
    lambda path, a: np.full(a.shape, 0.0 if "mean" in jax.tree_util.keystr(path) else 1.0, np.float32), stats
  )
  return loop.merge_model(graphdef, params, stats)


def test_section_flags_copies_and_collapse_with_the_classifier_features(tmp_path):
  work, config = _workdir(tmp_path)
  model = _small_cnn()
  export_classifier(
    model,
    work / "classifiers" / "none_seed3" / "best",
    name="small_cnn",
    class_names=CLASSES,
    image_size=16,
    in_channels=1,
    kwargs={"width": 4},
  )
  md, summary = synthetic_report.run(config, work, tmp_path / "out")
  json.dumps(summary, allow_nan=False)  # JSON-able as it is
  assert summary["feature_space"] == "classifier" and "none_seed3" in summary["classifier"]
  ref, paper = summary["penalties"]["reference"]["classes"]["NG"], summary["penalties"]["paper"]["classes"]["NG"]
  assert ref["memorised_share"] == 1.0 and ref["nearest_rms"]["median"] == 0.0
  assert ref["precision"] == 1.0 and not ref["collapsed"]
  assert paper["collapsed"] and paper["diversity_ratio"] == 0.0 and paper["recall"] == 0.0
  assert 0.0 <= paper["called_own_class"] <= 1.0 and 0.0 <= paper["real_validation_called_own_class"] <= 1.0
  assert summary["collapsed"] == [{"penalty": "paper", "class": "NG", "reasons": paper["reasons"]}]
  # The collapse flag opens the section, before the table.
  assert md.index("**Collapsed synthetic set: paper / NG**") < md.index("| penalty | class |")
  # How each set was made, from its summary.json ('decode' for a folder from before the setting).
  assert summary["penalties"]["reference"]["synthesis"] == "residual" and "Synthesis (reference): `residual`" in md
  assert summary["penalties"]["paper"]["synthesis"] is None  # no summary.json at all: not claimed
  assert "| reference | **NG** | 18 | 12 | 0.0000 |" in md and "| reference | 6 (psnr) | 21.50 | 0.610 |" in md
  rows = list(csv.DictReader((tmp_path / "out" / "synthetic_nearest_reference.csv").open()))
  assert len(rows) == 18 and all(r["memorised"] == "1" and float(r["nearest_rms"]) == 0.0 for r in rows)
  assert (tmp_path / "out" / "synthetic_nearest_paper_NG.png").is_file()


def test_section_falls_back_to_pixels_without_the_real_only_classifier(tmp_path):
  work, config = _workdir(tmp_path)
  shutil.rmtree(work / "generate_paper")
  md, summary = synthetic_report.run(config, work, tmp_path / "out")
  assert summary["feature_space"] == "pixels_32" and "pixels downsampled to 32x32" in md
  assert summary["penalties"]["paper"]["note"].startswith("no generated dataset")
  ng = summary["penalties"]["reference"]["classes"]["NG"]
  assert ng["called_own_class"] is None and ng["memorised_share"] == 1.0 and ng["precision"] == 1.0
  assert "No synthetic set is flagged as collapsed." in md
  config.pipeline.methods = ("none",)  # no DeepSMOTE: no section
  assert synthetic_report.run(config, work, tmp_path / "out")[0] == ""
