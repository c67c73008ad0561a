"""DeepSMOTE encoder/decoder training step: this project (JAX) beside PyTorch, in one run.

  python benchmarks/autoencoder_step.py                       # CPU: small presets, small batches
  python benchmarks/autoencoder_step.py --presets amoled_dent_200 amoled_scratch_396 --batch 100 256 \
      --dtypes bfloat16 float32 --torch-modes fp32 bf16_cl --json $OUT/ae_step.json      # a GPU

Images/s counts every image that goes through the encoder/decoder in a step, as ../shared/PERFORMANCE.md:
B reconstruction images plus B penalty images (penalty sample size = B). The JAX figure is the compiled
multi-step call (`steps_per_call` steps per call, lax.scan) timed with `block_until_ready`, median over
repeats, compile excluded (reported separately). No TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common, jax_steps  # noqa: E402
from deepsmote_jax.models import presets  # noqa: E402
from deepsmote_jax.models.autoencoder import build_autoencoder  # noqa: E402
from deepsmote_jax.train import autoencoder as ae  # noqa: E402
from deepsmote_jax.train import mesh as mesh_lib  # noqa: E402
from deepsmote_jax.train.precision import compute_dtype  # noqa: E402

EDGES = "+f32edges"  # dtype suffix: the first convolution and the last transposed convolution in float32


def model_dtypes(name: str):
  """'bfloat16' -> (bf16, None); 'bfloat16+f32edges' -> (bf16, float32): the model's dtype and edge_dtype
  (`models.autoencoder`: the two layers on the largest maps with 1-3 channels)."""
  base = name.removesuffix(EDGES)
  return compute_dtype(base), (jnp.float32 if name.endswith(EDGES) else None)


def prepare_jax_step(
  spec, batch_size: int, *, dtype: str, steps_per_call: int, penalty="reference", num_classes=2, seed=0
):
  """The project's training set-up on all devices for random uint8 images (B reconstruction + B penalty
  images per step); `dtype` as `model_dtypes` reads it."""
  mesh = mesh_lib.make_mesh()
  rng = np.random.default_rng(seed)
  n = 2 * batch_size * num_classes
  images = rng.integers(0, 256, (n, spec.image_size, spec.image_size, spec.channels), dtype=np.uint8)
  labels = (np.arange(n) % num_classes).astype(np.int32)
  sizes = dict(batch_size=batch_size, penalty_sample_size=batch_size, steps_per_call=steps_per_call)
  cfg = ae.AETrainConfig(**sizes, penalty=penalty, compute_dtype=dtype.removesuffix(EDGES), seed=seed)
  model_dtype, edge_dtype = model_dtypes(dtype)
  model = build_autoencoder(spec, dtype=model_dtype, edge_dtype=edge_dtype, seed=seed)
  return ae.prepare_training(model, images, labels, cfg, num_classes=num_classes, mesh=mesh)


def time_jax_step(
  spec, batch_size: int, *, dtype: str, steps_per_call: int, repeats: int, penalty="reference", num_classes=2, seed=0
) -> dict:
  """Median seconds per DeepSMOTE step of the project's jitted, data-parallel step on all devices."""
  setup = prepare_jax_step(
    spec, batch_size, dtype=dtype, steps_per_call=steps_per_call, penalty=penalty, num_classes=num_classes, seed=seed
  )
  t = jax_steps.time_multistep(setup, seed=seed, repeats=repeats)
  loss = t.pop("metrics")["loss"]
  return {
    "impl": f"jax {dtype}",
    "preset": spec.name,
    "channels": spec.channels,
    "batch": batch_size,
    "img_per_s": 2 * batch_size / t["step_s"],
    "loss": loss,
    "loss_finite": bool(np.isfinite(loss)),
    **t,
  }


def parse_case(text: str) -> tuple[str, int | None, int]:
  """'preset:channels:batch' (channels may be empty for the preset's own) -> (preset, channels, batch)."""
  parts = text.split(":")
  if len(parts) != 3:
    raise argparse.ArgumentTypeError(f"--cases entries are preset:channels:batch, got {text!r}")
  name, channels, batch = parts
  return name, (int(channels) if channels else None), int(batch)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  cpu = jax.default_backend() == "cpu"
  parser.add_argument(
    "--presets", nargs="+", default=["tiny_64", "deepsmote_mnist"] if cpu else ["amoled_dent_200", "amoled_scratch_396"]
  )
  parser.add_argument("--batch", nargs="+", type=int, default=[8] if cpu else [100, 256])
  parser.add_argument(
    "--cases",
    nargs="+",
    type=parse_case,
    default=None,
    help="preset:channels:batch entries (e.g. amoled_dent_200:3:256); replace --presets/--batch",
  )
  parser.add_argument(
    "--dtypes",
    nargs="+",
    default=["float32"] if cpu else ["bfloat16", "float32"],
    help=f"compute dtypes; a '{EDGES}' suffix (e.g. bfloat16{EDGES}) keeps the edge layers in float32",
  )
  parser.add_argument("--steps-per-call", type=int, default=2 if cpu else 10)
  parser.add_argument("--repeats", type=int, default=3 if cpu else 10)
  parser.add_argument(
    "--torch-modes",
    nargs="*",
    default=["fp32"] if cpu else ["fp32", "bf16_cl"],
    help="PyTorch baselines to run beside (empty: none)",
  )
  parser.add_argument("--torch-threads", type=int, default=None)
  parser.add_argument(
    "--json",
    default=None,
    help="write results here (default benchmarks/results/...); a Markdown table is written beside it",
  )
  args = parser.parse_args(argv)

  cases = args.cases or [(name, None, b) for name in args.presets for b in args.batch]
  rows = []
  for name, channels, b in cases:
    spec = presets.get_preset(name, **({"channels": channels} if channels else {}))
    for dtype in args.dtypes:
      try:
        rows.append(time_jax_step(spec, b, dtype=dtype, steps_per_call=args.steps_per_call, repeats=args.repeats))
      except Exception as e:  # noqa: BLE001 -- record and go on (e.g. out of memory at a large batch)
        rows.append(
          {
            "impl": f"jax {dtype}",
            "preset": name,
            "channels": spec.channels,
            "batch": b,
            "error": common.error_message(e),
          }
        )
      print(rows[-1], flush=True)
    if args.torch_modes:
      try:
        from benchmarks import torch_autoencoder
      except ImportError as e:
        rows.append(
          {
            "impl": "torch",
            "preset": name,
            "channels": spec.channels,
            "batch": b,
            "error": f"torch not importable: {e}",
          }
        )
        print(rows[-1], flush=True)
        continue
      for mode in args.torch_modes:
        r = torch_autoencoder.time_torch_step(
          spec, b, mode=mode, steps=args.repeats, warmup=2, penalty_size=b, num_threads=args.torch_threads
        )
        rows.append(
          {
            "impl": f"torch {mode}",
            "preset": name,
            "channels": spec.channels,
            "batch": b,
            **common.torch_row(r, ("step_s", "img_per_s", "loss", "error")),
          }
        )
        print(rows[-1], flush=True)
  common.add_speedups(rows, ("preset", "channels", "batch"))
  info = common.machine_info()
  out = args.json or (
    pathlib.Path(__file__).parent
    / "results"
    / f"autoencoder_step_{info.get('jax_backend', jax.default_backend())}.json"
  )
  settings = {
    "images_per_step": "B reconstruction + B penalty images",
    "penalty": "reference",
    "steps_per_call": args.steps_per_call,
    "repeats": args.repeats,
    "peak_mib": "JAX: XLA memory analysis of the compiled call; PyTorch: max_memory_allocated",
  }
  common.publish(
    out,
    {"benchmark": "autoencoder_step", "machine": info, "settings": settings, "rows": rows},
    COLUMNS,
    "DeepSMOTE encoder/decoder training step: JAX beside PyTorch",
  )
  return rows


COLUMNS = ["preset", "channels", *common.STEP_COLUMNS]


if __name__ == "__main__":
  main()
