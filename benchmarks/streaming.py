"""Streamed vs in-memory training: peak host memory against the number of images, and step throughput.

Usage:
  python benchmarks/streaming.py [--parts memory throughput] [--sizes 10000 40000] [--throughput-images 4000]
      [--out benchmarks/results/streaming_cpu.json]

Writes N random 64x64 grayscale PNGs (two classes, 1 in 10 NG) per size to a temporary folder and trains the
`tiny_64` autoencoder (penalty 'reference', batch 32, penalty sample 32) for two epochs on them (streamed, the
second reads the decoded-image cache), each run in a fresh process whose peak resident memory (`ru_maxrss`)
is recorded:
- in memory: `load_image_folder` decodes the whole set, which then lives on the device (here: host memory);
- streamed: `load_image_folder(..., stream=True)` lists the files only (`config.data.stream`), the images read
  step by step by `FileImages.stream` (tf.data, Pillow decoder) through `train.feed.FedPlan`, each decoded
  once into the run's decoded-image cache on local disk (`config.data.stream_cache='disk'`);
- streamed uncached (throughput only): the same with `stream_cache='off'`, every image decoded every epoch.
Memory should stay flat when streaming (target <= 1.3x for 4x the images). Throughput: the median images/s
of the training calls after the first (compile), also split into the first epoch ('cold': the cache being
filled) and the calls wholly in later epochs ('cached'); every mode on the same folder in one process each,
run alternately (target: streamed within 10 % of in memory). The machine is shared: numbers are indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402

COLUMNS = (
  "images",
  "mode",
  "peak_rss_mib",
  "vs_smallest",
  "epoch_s",
  "images_per_s",
  "cold_images_per_s",
  "cached_images_per_s",
  "steps",
  "load_average_1min",
)
MODES = {"memory": None, "stream": "disk", "stream_uncached": "off"}  # mode -> config.data.stream_cache


def write_folder(root: pathlib.Path, n: int, size: int = 64) -> pathlib.Path:
  """n random PNGs under root/{OK,NG}/ (every 10th NG): smooth blobs plus noise, so PNGs are realistic-sized."""
  from PIL import Image

  rng = np.random.default_rng(0)
  for c in ("OK", "NG"):
    (root / c).mkdir(parents=True, exist_ok=True)
  yy, xx = np.mgrid[:size, :size]
  for i in range(n):
    cy, cx = rng.integers(8, size - 8, 2)
    blob = 80 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)
    img = np.clip(100 + blob + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(root / ("NG" if i % 10 == 0 else "OK") / f"{i:06d}.png")
  return root


def worker(mode: str, root: str, epochs: int, workdir: str, cache: bool) -> dict:
  """One training run in this process; returns its timings and peak memory."""
  from deepsmote_jax import compilation_cache
  from deepsmote_jax.data import folder
  from deepsmote_jax.models.autoencoder import build_autoencoder
  from deepsmote_jax.models.presets import get_preset
  from deepsmote_jax.train import autoencoder as ae

  if cache:  # throughput rows: the runs of one mode compile the same step, only the first pays for it
    compilation_cache.enable()
  spec = get_preset("tiny_64", channels=1)
  t0 = time.perf_counter()
  cache_setting = MODES[mode] or "disk"
  ds = folder.load_image_folder(root, image_size=64, channels=1, stream=mode != "memory", stream_cache=cache_setting)
  images, labels = ds.images, ds.labels
  load_s = time.perf_counter() - t0
  cfg = ae.AETrainConfig(
    epochs=epochs, batch_size=32, penalty_sample_size=32, steps_per_call=2, learning_rate=2e-3, seed=0
  )
  t0 = time.perf_counter()
  result = ae.train_autoencoder(
    build_autoencoder(spec, seed=0), images, np.asarray(labels), cfg, workdir=workdir, progress=False
  )
  train_s = time.perf_counter() - t0
  records = [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if r.get("images_per_s")][1:]
  rates = [r["images_per_s"] for r in records]
  per_epoch = -(-len(labels) // cfg.batch_size)
  cold = [r["images_per_s"] for r in records if r["step"] <= per_epoch]
  cached = [r["images_per_s"] for r in records if r["step"] - cfg.steps_per_call >= per_epoch]
  return {
    "mode": mode,
    "images": len(labels),
    "load_s": load_s,
    "train_s": train_s,
    "epoch_s": load_s + train_s,
    "steps": result.summary["final_step"],
    "images_per_s": float(np.median(rates)) if rates else None,
    "cold_images_per_s": float(np.median(cold)) if cold else None,
    "cached_images_per_s": float(np.median(cached)) if cached else None,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "final_loss": result.summary.get("loss"),
    "load_average_1min": os.getloadavg()[0],  # the machine is shared: how busy it was at the end of this run
  }


def _run_worker(mode: str, root: pathlib.Path, epochs: int, cache: bool) -> dict:
  """One run in a fresh process. Memory rows run without the compilation cache, so each pays the same
  compilation (a cache hit would lower a later row's peak and flatter the comparison)."""
  with tempfile.TemporaryDirectory() as wd:
    cmd = [sys.executable, __file__, "--worker", mode, "--root", str(root), "--epochs", str(epochs), "--workdir", wd]
    cmd += ["--cache"] if cache else []
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  if proc.returncode:
    return {"mode": mode, "error": common.error_message(RuntimeError(proc.stderr[-2000:]))}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--parts", nargs="+", choices=("memory", "throughput"), default=["memory", "throughput"])
  p.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000])
  p.add_argument("--memory-epochs", type=int, default=2)
  p.add_argument("--throughput-images", type=int, default=4000)
  p.add_argument("--throughput-repeats", type=int, default=2)
  p.add_argument("--throughput-epochs", type=int, default=3)
  p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "streaming_cpu.json"))
  p.add_argument("--worker", choices=tuple(MODES))
  p.add_argument("--root")
  p.add_argument("--epochs", type=int, default=1)
  p.add_argument("--workdir")
  p.add_argument("--cache", action="store_true")
  args = p.parse_args(argv)
  if args.worker:
    print(json.dumps(worker(args.worker, args.root, args.epochs, args.workdir, args.cache)))
    return {}

  rows, throughput = [], []
  with tempfile.TemporaryDirectory() as tmp:
    for n in args.sizes if "memory" in args.parts else []:
      root = write_folder(pathlib.Path(tmp) / f"n{n}", n)
      for mode in ("memory", "stream"):
        rows.append(_run_worker(mode, root, args.memory_epochs, cache=False))
        print(rows[-1], flush=True)
    if "throughput" in args.parts:
      root = write_folder(pathlib.Path(tmp) / "throughput", args.throughput_images)
      for _ in range(args.throughput_repeats):
        for mode in MODES:
          throughput.append(_run_worker(mode, root, args.throughput_epochs, cache=True))
          print(throughput[-1], flush=True)
  payload = {
    "machine": common.machine_info(),
    "settings": {
      "model": f"tiny_64, 1 channel, batch 32, penalty reference with 32 images, {args.memory_epochs} epoch(s)",
      "images": "random 64x64 grayscale PNG (1 in 10 NG)",
      "throughput": (
        f"{args.throughput_images} images, {args.throughput_epochs} epochs, median images/s after the first call "
        "(cold: first epoch; cached: later epochs)"
      ),
    },
    "rows": rows + throughput,
    "summary": _summary(rows, throughput),
  }
  payload["notes"] = [*payload["summary"].pop("notes"), "shared 2-core CPU machine: numbers are indicative"]
  common.publish(args.out, payload, COLUMNS, "Streamed vs in-memory autoencoder training (CPU)")
  return payload


def _summary(rows: list[dict], throughput: list[dict]) -> dict:
  """Memory growth from the smallest to the largest set per mode; throughput medians and their ratio."""
  out: dict = {"notes": []}
  for mode in ("memory", "stream"):
    mine = [r for r in rows if r.get("mode") == mode and "error" not in r]
    for r in mine:
      r["vs_smallest"] = r["peak_rss_mib"] / mine[0]["peak_rss_mib"]
    if len(mine) > 1:
      out[f"{mode}_memory_growth"] = mine[-1]["vs_smallest"]
  if "stream_memory_growth" in out and "memory_memory_growth" in out:
    out["notes"].append(
      f"peak memory, largest / smallest set: streamed {out['stream_memory_growth']:.2f}x, in memory "
      f"{out['memory_memory_growth']:.2f}x (target for streamed: <= 1.3x)"
    )
  med: dict = {}  # mode -> {'all' | 'cold' | 'cached': median images/s}
  for mode in MODES:
    for phase in ("all", "cold", "cached"):
      key = "images_per_s" if phase == "all" else f"{phase}_images_per_s"
      rates = [r[key] for r in throughput if r.get("mode") == mode and r.get(key)]
      if rates:
        med.setdefault(mode, {})[phase] = float(np.median(rates))
  out["median_images_per_s"] = med
  memory = med.get("memory", {}).get("all")
  for mode in ("stream", "stream_uncached") if memory else ():
    phases = {p: v / memory for p, v in med.get(mode, {}).items() if p != "all"}
    out.update({f"{mode}_{p}_vs_memory": r for p, r in phases.items()})
    if phases:
      parts = ", ".join(f"{p} {r:.2f} ({med[mode][p]:.0f} images/s)" for p, r in phases.items())
      out["notes"].append(f"training throughput {mode} / in memory ({memory:.0f} images/s): {parts}")
  if "stream_cached_vs_memory" in out:
    out["notes"].append(f"target streamed / in memory >= 0.90: cached {out['stream_cached_vs_memory']:.2f}")
  return out


if __name__ == "__main__":
  main()
