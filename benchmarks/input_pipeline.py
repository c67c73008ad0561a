"""Decoded images per second: the Pillow folder loader and the tf.data pipeline, cold and cached.

Usage:
  python benchmarks/input_pipeline.py [--root DIR | --synthetic N] [--image-size 64] [--channels 1]
      [--out benchmarks/results/input_pipeline_cpu.json]

Default root: ../shared/data/magnetic_tile/images beside the checkout; where it is absent (or with
--synthetic N) a folder of N random grayscale JPEGs of varied size is written to a temporary directory.
"cold" is the first pass (files decoded; the OS file cache may already hold them), "cached" a second pass:
for `load_image_folder` a second full decode, for tf.data the epoch served from `Dataset.cache()`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deepsmote_jax.data import folder  # pylint: disable=g-import-not-at-top,wrong-import-position


def _write_synthetic(n: int, out: pathlib.Path) -> pathlib.Path:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  for i in range(n):
    h, w = rng.integers(120, 620, 2)
    d = out / ("ok" if i % 5 else "ng")
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(d / f"exp1_num_{i}.jpg", quality=90)
  return out


def _epoch(ds) -> tuple[int, float]:
  t = time.perf_counter()
  n = sum(len(b["label"]) for b in ds.as_numpy_iterator())
  return n, time.perf_counter() - t


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "magnetic_tile" / "images"))
  p.add_argument("--synthetic", type=int, default=0, help="write and use N synthetic JPEGs instead")
  p.add_argument("--image-size", type=int, default=64)
  p.add_argument("--channels", type=int, default=1)
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "input_pipeline_cpu.json"))
  args = p.parse_args(argv)

  tmp = None
  root = pathlib.Path(args.root)
  if args.synthetic or not root.is_dir():
    tmp = tempfile.TemporaryDirectory()
    root = _write_synthetic(args.synthetic or 500, pathlib.Path(tmp.name))
  kw = dict(image_size=args.image_size, channels=args.channels)
  results = {}

  for name in ("cold", "cached"):
    t = time.perf_counter()
    s = folder.load_image_folder(root, **kw)
    dt = time.perf_counter() - t
    results[f"pillow_load_image_folder_{name}"] = {"images": len(s), "seconds": dt, "images_per_s": len(s) / dt}

  from deepsmote_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  pipeline.import_tf()
  _, files, labels = folder.list_image_folder(root)
  one_process = dict(process_index=0, process_count=1)
  common = dict(root=root, batch_size=args.batch_size, repeat=False, shuffle=True, drop_remainder=False, **one_process)
  common.update(cache=True, **kw)
  for decoder in ("tf", "pillow"):
    ds = pipeline.make_dataset((files, labels), decoder=decoder, **common)
    for name in ("cold", "cached"):
      n, dt = _epoch(ds)
      results[f"tfdata_files_{decoder}_decoder_{name}"] = {"images": n, "seconds": dt, "images_per_s": n / dt}
  ds = pipeline.make_dataset(
    s, batch_size=args.batch_size, repeat=False, drop_remainder=False, process_index=0, process_count=1
  )
  n, dt = _epoch(ds)
  results["tfdata_in_memory_imageset"] = {"images": n, "seconds": dt, "images_per_s": n / dt}

  doc = {
    "root": str(root) if tmp is None else f"synthetic ({len(files)} JPEGs)",
    "image_size": args.image_size,
    "channels": args.channels,
    "batch_size": args.batch_size,
    "cpu_count": os.cpu_count(),
    "decode_threads": folder.default_workers(),
    "machine": platform.machine(),
    "python": platform.python_version(),
    "note": "shared 2-core CPU machine with other jobs running: numbers are indicative",
    "results": results,
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(doc, f, indent=1)
  print(json.dumps(doc, indent=1))
  if tmp is not None:
    tmp.cleanup()
  return doc


if __name__ == "__main__":
  main()
