"""The AMOLED paper's own encoder/decoder run, timed: 100 images of 200x200, 1,000 epochs, batch 100.

The paper reports "more than 8 hours" for it. Two fresh processes run the same job one after the other
with one JAX persistent compilation cache folder: the first starts with it empty (cold), the second finds
it filled (warm). Each child reports

* `job_wall_s`: from the parent starting the child to the trained model back on the host -- interpreter
  start, imports, model build, compilation (or cache load), every step (`train_autoencoder`, no
  checkpoints);
* `steps_s`: the 1,000 epochs alone, compilation excluded (the multi-step call compiled ahead of time,
  then run over the whole plan, batches placed as the training loop places them);
* `peak_mib`: XLA's memory accounting of the compiled call.

  python benchmarks/paper_run.py --json $OUT/paper_run.json          # on a GPU
  python benchmarks/paper_run.py --preset micro_16 --images 16 --epochs 5 --batch 8 --json /tmp/p.json

Random uint8 images (two classes, half each): the time does not depend on the pixels. No TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

T_START = time.time()
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402  (imports neither JAX nor PyTorch)

MARK = "PAPER_RUN_RESULT "


def child(args) -> dict:
  """One run in this process; returns its timings (printed as one JSON line for the parent)."""
  import jax
  import numpy as np

  from deepsmote_jax import compilation_cache
  from deepsmote_jax.models.autoencoder import build_autoencoder
  from deepsmote_jax.models.presets import get_preset
  from deepsmote_jax.train import autoencoder as ae
  from deepsmote_jax.train import loop
  from deepsmote_jax.train.precision import compute_dtype

  compilation_cache.enable(args.cache_dir)
  t_imported = time.time()
  spec = get_preset(args.preset, **({"channels": args.channels} if args.channels else {}))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.images, spec.image_size, spec.image_size, spec.channels), dtype=np.uint8)
  labels = (np.arange(args.images) % 2).astype(np.int32)
  cfg = ae.AETrainConfig(
    epochs=args.epochs,
    batch_size=args.batch,
    penalty="reference",
    penalty_sample_size=args.batch,
    steps_per_call=args.steps_per_call,
    compute_dtype=args.dtype,
    seed=0,
  )
  model = build_autoencoder(spec, dtype=compute_dtype(args.dtype), seed=0)
  result = ae.train_autoencoder(model, images, labels, cfg, num_classes=2, progress=False)
  jax.block_until_ready(jax.tree.leaves(result.state.params))
  t_job = time.time()

  # Steps only: the same multi-step call compiled ahead of time, then the whole plan run through it.
  model = build_autoencoder(spec, dtype=compute_dtype(args.dtype), seed=0)
  setup = ae.prepare_training(model, images, labels, cfg, num_classes=2)
  k, mesh = setup.cfg.steps_per_call, setup.mesh
  key = jax.random.key(0)
  state = loop.place_state(setup.state, mesh)
  executable = setup.compiled.lower(state, loop.place_batches(setup.plan(0, k), mesh, k), key, setup.data).compile()
  memory = common.jax_compiled_memory(executable)
  t0 = time.perf_counter()
  metrics = None
  for first, n in loop.chunk_plan(0, setup.total_steps, k):
    state, metrics = executable(state, loop.place_batches(setup.plan(first, n), mesh, k), key, setup.data)
  jax.block_until_ready((state, metrics))
  steps_s = time.perf_counter() - t0
  return {
    "job_end_time": t_job,
    "import_s": t_imported - T_START,
    "job_in_process_s": t_job - t_imported,
    "steps_s": steps_s,
    "total_steps": setup.total_steps,
    "steps_per_call": k,
    "img_per_s": setup.total_steps * (args.batch + args.batch) / steps_s,
    "final_loss": float(result.summary.get("loss", float("nan"))),
    "peak_mib": memory.get("peak_mib"),
    "device_peak_mib": common.jax_device_peak_mib(),
    "backend": jax.default_backend(),
    "dtype": jax.numpy.dtype(compute_dtype(args.dtype)).name,
  }


def run_child(argv: list[str], cache_dir: str, label: str, timeout: float) -> dict:
  cmd = [sys.executable, __file__, "--child", "--cache-dir", cache_dir] + argv
  t_spawn = time.time()
  env = dict(os.environ, DEEPSMOTE_JAX_CACHE=cache_dir)  # this run's cache, whatever the caller had set
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
  if proc.returncode or not lines:
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    return {"run": label, "error": f"child exited {proc.returncode}: {tail}"[:500]}
  r = json.loads(lines[-1][len(MARK) :])
  r["job_wall_s"] = r.pop("job_end_time") - t_spawn
  return {"run": label, **r}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="amoled_dent_200")
  p.add_argument("--channels", type=int, default=3)
  p.add_argument("--images", type=int, default=100)
  p.add_argument("--epochs", type=int, default=1000)
  p.add_argument("--batch", type=int, default=100)
  p.add_argument("--steps-per-call", type=int, default=10)
  p.add_argument("--dtype", default="auto", help="compute dtype: auto (bf16 on GPU/TPU), bfloat16, float32")
  p.add_argument("--child-timeout", type=float, default=240.0)
  p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "paper_run.json"))
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    print(MARK + json.dumps(child(args)), flush=True)
    return None

  passed = [
    f"--preset={args.preset}",
    f"--channels={args.channels}",
    f"--images={args.images}",
    f"--epochs={args.epochs}",
    f"--batch={args.batch}",
    f"--steps-per-call={args.steps_per_call}",
    f"--dtype={args.dtype}",
  ]
  rows = []
  with tempfile.TemporaryDirectory(prefix="paper_run_cache_") as cache:
    for label in ("cold cache", "warm cache"):
      try:
        rows.append(run_child(passed, cache, label, args.child_timeout))
      except subprocess.TimeoutExpired:
        rows.append({"run": label, "error": f"timed out after {args.child_timeout:.0f} s"})
      print(json.dumps(rows[-1]), flush=True)
  settings = {
    "preset": args.preset,
    "channels": args.channels,
    "images": args.images,
    "epochs": args.epochs,
    "batch": args.batch,
    "penalty": "reference (sample = batch)",
    "dtype": args.dtype,
    "targets": "steps <= 3 s, wall <= 15 s with a warm cache (one H200)",
  }
  notes = [
    "job_wall_s: child process start to trained parameters on the host (imports, build, compile or "
    "cache load, all steps); steps_s: all steps with compilation excluded"
  ]
  info = common.machine_info()
  record = {"benchmark": "paper_run", "machine": info, "settings": settings, "rows": rows, "notes": notes}
  common.publish(args.json, record, COLUMNS, "The paper's own run: 100 images, 1,000 epochs")
  return rows


COLUMNS = ["run", "job_wall_s", "steps_s", "img_per_s", "import_s", "total_steps", "final_loss", "peak_mib", "error"]


if __name__ == "__main__":
  main()
