"""Classifier training step: this project's Flax models beside torchvision's, in one run.

  python benchmarks/classifier_step.py                                  # CPU: small_cnn + resnet50 at 64x64
  python benchmarks/classifier_step.py --models inception_v3 resnet50 --image-size 299 --batch 64 \
      --dtypes bfloat16 float32 --torch-modes fp32 bf16_cl --json $OUT/classifier_step.json   # a GPU

Images/s = batch / step time; the JAX step is the project's compiled multi-step call (lax.scan over
`steps_per_call` steps, augmentation and masked cross-entropy included), compile excluded. No TensorFlow.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common, jax_steps  # noqa: E402
from deepsmote_jax.models.classifiers import build_classifier  # noqa: E402
from deepsmote_jax.train import classifier as cls  # noqa: E402
from deepsmote_jax.train import mesh as mesh_lib  # noqa: E402
from deepsmote_jax.train.precision import compute_dtype  # noqa: E402


def time_jax_classifier(
  name: str,
  batch_size: int,
  image_size: int,
  *,
  dtype: str,
  steps_per_call: int,
  repeats: int,
  num_classes: int = 1000,
  seed: int = 0,
) -> dict:
  mesh = mesh_lib.make_mesh()
  rng = np.random.default_rng(seed)
  n = 2 * batch_size
  images = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
  labels = rng.integers(0, num_classes, n).astype(np.int32)
  cfg = cls.ClassifierTrainConfig(
    batch_size=batch_size,
    steps_per_call=steps_per_call,
    compute_dtype=dtype,
    optimizer="sgd",
    learning_rate=0.01,
    max_shift=0,
  )
  t0 = time.perf_counter()
  model = build_classifier(
    name,
    num_classes,
    in_channels=3,
    image_size=image_size,
    dtype=compute_dtype(dtype),
    seed=seed,
    **({"aux_head": True} if name == "inception_v3" else {}),
  )
  init_s = time.perf_counter() - t0
  setup = cls.prepare_training(model, images, labels, cfg, num_classes=num_classes, mesh=mesh)
  t = jax_steps.time_multistep(setup, seed=seed, repeats=repeats)
  t.pop("metrics")
  return {
    "impl": f"jax {dtype}",
    "model": name,
    "batch": batch_size,
    "image_size": image_size,
    "img_per_s": batch_size / t["step_s"],
    "init_s": init_s,
    **t,
  }


def main(argv=None):
  cpu = jax.default_backend() == "cpu"
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", nargs="+", default=["small_cnn", "resnet50"] if cpu else ["inception_v3", "resnet50"])
  p.add_argument("--image-size", type=int, default=64 if cpu else 299)
  p.add_argument("--batch", nargs="+", type=int, default=[8] if cpu else [64])
  p.add_argument("--dtypes", nargs="+", default=["float32"] if cpu else ["bfloat16", "float32"])
  p.add_argument("--steps-per-call", type=int, default=2 if cpu else 10)
  p.add_argument("--repeats", type=int, default=3 if cpu else 10)
  p.add_argument("--torch-modes", nargs="*", default=["fp32"] if cpu else ["fp32", "bf16_cl"])
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  rows = []
  for name in args.models:
    for b in args.batch:
      for dtype in args.dtypes:
        try:
          rows.append(
            time_jax_classifier(
              name, b, args.image_size, dtype=dtype, steps_per_call=args.steps_per_call, repeats=args.repeats
            )
          )
        except Exception as e:  # noqa: BLE001
          rows.append({"impl": f"jax {dtype}", "model": name, "batch": b, "error": common.error_message(e)})
        print(rows[-1], flush=True)
      torch_name = {"inception_v3": "inception_v3", "resnet50": "resnet50"}.get(name)
      if torch_name and args.torch_modes:
        try:
          from benchmarks import torch_classifier
        except ImportError as e:
          rows.append({"impl": "torch", "model": name, "batch": b, "error": f"torch not importable: {e}"})
          continue
        for mode in args.torch_modes:
          r = torch_classifier.time_torch_classifier(
            torch_name, b, mode=mode, image_size=args.image_size, steps=args.repeats, warmup=2
          )
          rows.append(
            {
              "impl": f"torchvision {mode}",
              "model": name,
              "batch": b,
              "image_size": args.image_size,
              **common.torch_row(r, ("step_s", "img_per_s", "error")),
            }
          )
          print(rows[-1], flush=True)
  common.add_speedups(rows, ("model", "batch"))  # each JAX row against the best torchvision row
  info = common.machine_info()
  out = args.json or (
    pathlib.Path(__file__).parent / "results" / f"classifier_step_{info.get('jax_backend', 'cpu')}.json"
  )
  settings = {
    "optimizer": "SGD momentum 0.9 (both)",
    "classes": 1000,
    "steps_per_call": args.steps_per_call,
    "peak_mib": "JAX: XLA memory analysis of the compiled call; PyTorch: max_memory_allocated",
  }
  common.publish(
    out,
    {"benchmark": "classifier_step", "machine": info, "settings": settings, "rows": rows},
    COLUMNS,
    "Classifier training step: JAX beside torchvision",
  )


COLUMNS = ["model", "image_size", *common.STEP_COLUMNS]


if __name__ == "__main__":
  main()
