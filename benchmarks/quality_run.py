"""A paper-scale quality run on real defect images: magnetic_tile blowholes (the dent analogue) vs defect-free.

The whole main job (`deepsmote_jax.jobs.pipeline.run_pipeline`) on defect-centred crops: each blowhole image
gives one crop per defect region of its mask, each free image its central crop, at the preset's size
(200x200 for `amoled_dent_200`, the paper's Fig. 3 encoder/decoder). The split is grouped by physical tile
(`num_<id>`: the same tile appears under several exposures), the training split is made scarce in
blowholes (`--minority-ratio` x the free crops), and classifiers are trained on the real training set
(no oversampling, class weights) and on the DeepSMOTE-balanced one, over several seeds; validation picks
the epoch and the recall-first threshold, the test split is only scored.

  python benchmarks/quality_run.py --data ../shared/data/magnetic_tile --json $OUT/quality.json
  python benchmarks/quality_run.py --smoke --json /tmp/q.json           # tiny, CPU, same code path

`--data` is a folder with `images/<class>/` and `masks/<class>/` (magnetic_tile's layout). Without it, or
when it is absent, `--synthetic-fallback` draws a small look-alike set (textured tiles, dark round pits
with masks) so the code path still runs; the JSON says which data was used. Needs ml_collections (the
config files); no TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

OK_CLASS, NG_CLASS = "free", "blowhole"


def load_config(path: pathlib.Path, arg: str | None = None):
  """`get_config(arg)` of a config file, without absl flags."""
  spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def subset(src: pathlib.Path, dst: pathlib.Path, max_per_class: int | None, stride: int = 1) -> pathlib.Path:
  """Copies images (every `stride`-th, at most `max_per_class`, sorted by name) and their masks of both classes."""
  for cls in (OK_CLASS, NG_CLASS):
    files = sorted((src / "images" / cls).iterdir())[::stride][:max_per_class]
    for kind in ("images", "masks"):
      (dst / kind / cls).mkdir(parents=True, exist_ok=True)
    for f in files:
      shutil.copy2(f, dst / "images" / cls / f.name)
      mask = src / "masks" / cls / (f.stem + ".png")
      if mask.exists():
        shutil.copy2(mask, dst / "masks" / cls / mask.name)
  return dst


def synthetic_tiles(dst: pathlib.Path, per_class: int, size: int, seed: int = 0) -> pathlib.Path:
  """Textured grey tiles; NG ones carry one or two dark round pits, marked in `masks/`."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  for cls in (OK_CLASS, NG_CLASS):
    for kind in ("images", "masks"):
      (dst / kind / cls).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
      img = rng.normal(128, 12, (size, size)) + 20 * np.sin(xx / rng.uniform(3, 9))
      mask = np.zeros((size, size), bool)
      if cls == NG_CLASS:
        for _ in range(rng.integers(1, 3)):
          cy, cx, r = rng.integers(size // 5, 4 * size // 5, 2).tolist() + [rng.uniform(size / 30, size / 12)]
          pit = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
          img[pit] -= 70
          mask |= pit
      name = f"exp1_num_{1000 * (cls == NG_CLASS) + i // 2}_{i}"  # two files per physical tile
      Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(dst / "images" / cls / f"{name}.jpg")
      Image.fromarray(mask.astype(np.uint8) * 255).save(dst / "masks" / cls / f"{name}.png")
  return dst


def build_config(args):
  config = load_config(ROOT / "configs" / "amoled_dent_200.py")
  config.model.preset = args.preset
  config.model.channels = 1
  config.model.out_channels = args.out_channels
  config.train.epochs = args.epochs
  config.train.batch_size = args.batch
  config.train.penalty_sample_size = args.batch
  config.checkpoint.every_steps = 0
  config.split.group_pattern = r"num_(\d+)"
  config.split.ratios = (0.6, 0.2, 0.2)
  config.imbalance.ok_class = OK_CLASS
  config.imbalance.minority_ratio = args.minority_ratio
  config.classifier.name = args.classifier
  config.classifier.epochs = args.classifier_epochs
  config.classifier.batch_size = args.classifier_batch
  config.classifier.steps_per_call = args.steps_per_call
  config.train.steps_per_call = args.steps_per_call
  config.pipeline.methods = tuple(args.methods)
  config.pipeline.penalties = ("reference",)
  config.pipeline.seeds = tuple(args.seeds)
  config.pipeline.positive_class = NG_CLASS
  return config


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "magnetic_tile"))
  p.add_argument("--synthetic-fallback", action="store_true", help="draw look-alike tiles if --data is absent")
  p.add_argument("--max-per-class", type=int, default=None, help="use at most this many files per class")
  p.add_argument("--free-stride", type=int, default=1, help="take every n-th free image (keeps the run small)")
  p.add_argument("--preset", default="amoled_dent_200")
  p.add_argument(
    "--out-channels", type=int, default=3, help="decoder output channels (Fig. 3: 1 in, 3 out; 0 = as the input)"
  )
  p.add_argument("--epochs", type=int, default=1000, help="encoder/decoder epochs (the paper: 1,000)")
  p.add_argument("--batch", type=int, default=100)
  p.add_argument("--minority-ratio", type=float, default=0.1)
  p.add_argument("--classifier", default="small_cnn")
  p.add_argument("--classifier-epochs", type=int, default=30)
  p.add_argument("--classifier-batch", type=int, default=32)
  p.add_argument("--steps-per-call", type=int, default=10)
  p.add_argument("--methods", nargs="+", default=["none", "class_weights", "deepsmote"])
  p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  p.add_argument("--smoke", action="store_true", help="tiny CPU settings (micro_16, 2 epochs, one seed, 2 methods)")
  p.add_argument("--workdir", default=None, help="pipeline workdir (default: a temporary folder)")
  p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "quality_run.json"))
  args = p.parse_args(argv)
  if args.smoke:
    args.preset, args.epochs, args.batch, args.max_per_class = "micro_16", 2, 8, args.max_per_class or 12
    args.classifier_epochs, args.classifier_batch, args.steps_per_call, args.seeds = 2, 8, 2, args.seeds[:1]
    args.minority_ratio, args.methods = 0.5, ["none", "deepsmote"]

  try:
    import ml_collections  # noqa: F401  (the config files are ml_collections ConfigDicts)
  except ImportError:
    print(
      "error: ml_collections is not importable; on the GPU machine carry the wheels of "
      "benchmarks/prepare_wheels.sh (.whl)",
      file=sys.stderr,
    )
    sys.exit(2)
  from deepsmote_jax import compilation_cache
  from deepsmote_jax.data.folder import load_image_folder
  from deepsmote_jax.data.patches import DefectCropSpec
  from deepsmote_jax.jobs.pipeline import run_pipeline
  from deepsmote_jax.models.presets import get_preset

  compilation_cache.enable()
  config = build_config(args)
  size = get_preset(args.preset).image_size
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="quality_run_") as tmp:
    tmp = pathlib.Path(tmp)
    data = pathlib.Path(args.data)
    if (data / "images" / NG_CLASS).is_dir():
      source = f"magnetic_tile ({data})"
      if args.max_per_class or args.free_stride > 1:
        data = subset(data, tmp / "data", args.max_per_class, 1)
        if args.free_stride > 1:
          shutil.rmtree(data / "images" / OK_CLASS)
          subset(pathlib.Path(args.data), tmp / "free", args.max_per_class, args.free_stride)
          shutil.move(str(tmp / "free" / "images" / OK_CLASS), data / "images" / OK_CLASS)
    elif args.synthetic_fallback:
      source = "synthetic look-alike tiles (magnetic_tile not found)"
      data = synthetic_tiles(tmp / "data", args.max_per_class or 24, max(2 * size, 96))
    else:
      raise SystemExit(f"error: {args.data} has no images/{NG_CLASS}/ folder (pass --data or --synthetic-fallback)")
    crops = load_image_folder(
      data / "images",
      image_size=size,
      channels=1,
      classes=[OK_CLASS, NG_CLASS],
      patches=DefectCropSpec(mask_root=str(data / "masks"), no_defect="center"),
    )
    print(f"crops: {crops.counts()} from {source}", flush=True)
    workdir = pathlib.Path(args.workdir) if args.workdir else tmp / "run"
    summary = run_pipeline(config, workdir, progress=False, image_set=crops)
    wall = time.perf_counter() - t0
    report = (workdir / "report" / "report.md").read_text()
    data_info = json.loads((workdir / "data" / "DONE.json").read_text())

  rows = []
  for method, h in summary["methods"].items():
    row = {"method": method}
    for key, value in h.items():
      row[key] = None if value["mean"] is None else 100 * value["mean"]
      row[key + "_std"] = None if value["std"] is None else 100 * value["std"]
    rows.append(row)
  settings = {
    "data": source,
    "crops": crops.counts(),
    "split_counts": data_info.get("counts"),
    "preset": f"{args.preset} (1 channel in, {args.out_channels or 1} out)",
    "autoencoder_epochs": args.epochs,
    "batch": args.batch,
    "classifier": f"{args.classifier}, {args.classifier_epochs} epochs, batch {args.classifier_batch}",
    "seeds": list(args.seeds),
    "minority_ratio": args.minority_ratio,
    "stage_wall_s": {k: round(v, 1) for k, v in summary.get("stage_wall_s", {}).items()},
    "wall_s": round(wall, 1),
  }
  notes = [
    "percentages, mean over seeds (the *_std columns are the spread); threshold = recall-first, chosen on "
    "validation for NG recall >= 98 %, scored on test",
    "split grouped by tile id (num_<id>), crops from one tile never on both sides",
  ]
  info = common.machine_info()
  out = common.write_outputs(
    args.json,
    {"benchmark": "quality_run", "machine": info, "settings": settings, "rows": rows, "notes": notes},
    COLUMNS,
    "Quality: magnetic_tile blowhole crops vs free, DeepSMOTE vs baselines",
  )
  out.with_name(out.stem + "_report.md").write_text(report)
  common.print_table(rows, COLUMNS)
  print(f"wrote {out} ({wall:.0f} s)")
  return rows


COLUMNS = [
  "method",
  "acsa",
  "acsa_std",
  "ng_recall",
  "ng_recall_std",
  "overkill_rate",
  "ng_recall_at_threshold",
  "overkill_at_threshold",
  "overkill_at_threshold_std",
]


if __name__ == "__main__":
  main()
