"""CPU tuning of the DeepSMOTE encoder/decoder step (XLA:CPU) beside PyTorch's CPU step, in one run.

  python benchmarks/cpu_tuning.py                          # every part -> benchmarks/results/cpu_tuning.json
  python benchmarks/cpu_tuning.py --parts layers --presets deepsmote_mnist
  python benchmarks/cpu_tuning.py --parts flags --flags none eigen_single_thread

Parts (each records the load average before and after; the machine may be shared, so every JAX figure has
a PyTorch figure measured beside it, interleaved in rounds, and medians over rounds are reported):
  layers  every convolution of each preset at B images: forward, input-gradient and weight-gradient time of
          XLA's convolution and of each rewrite in deepsmote_jax/models/layers.py (`FAST_PATHS`,
          `cpu_grad_modes`), plus the same convolution in NCHW layout.
  layer_flags  the same table under other XLA_FLAGS (fresh subprocesses).
  code    the full step (`autoencoder_step.time_jax_step`: B + B penalty images, float32) with the rewrites
          off ('xla': the code before this tuning), the exact 1x1 products only ('matmul'), plus the custom
          gradients of the sub-pixel form ('subpixel_grads'), and all of them ('current': the scatter-form
          transposed convolution), beside PyTorch fp32 (its default threads, and each of --torch-threads).
  spc     steps per compiled call, unrolled (the loop's CPU choice) and rolled (the loop's CPU cap lifted
          and `compile_steps` patched in this process only).
  flags   XLA_FLAGS / thread variants, each in a fresh subprocess (XLA reads its flags once per process),
          each timing the current code and PyTorch fp32 beside it ('none' is the reference); every variant
          also reports what its compiled HLO looks like ('hlo'), so flags that change nothing show as such.
No TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.autoencoder_step import time_jax_step  # noqa: E402
from deepsmote_jax.models import (
  layers,  # noqa: E402
  presets,  # noqa: E402
)
from deepsmote_jax.train import loop  # noqa: E402

# XLA_FLAGS variants of the 'flags' part ('none' is the reference); 'taskset1' pins the process to one core.
# By default this XLA:CPU sends convolutions and dots to YNNPACK fusions ('__ynn_fusion' in the compiled HLO);
# the 'ynn_*' variants send convolutions (or both) back to XLA's Eigen kernels.
_YNN = "--xla_cpu_experimental_ynn_fusion_type="
FLAG_VARIANTS = {
  "none": "",
  "ynn_dot_only": _YNN + "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
  "ynn_off": _YNN,
  "eigen_single_thread": "--xla_cpu_multi_thread_eigen=false",
  "concurrency_scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
  "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false",
  "thunk_runtime_off": "--xla_cpu_use_thunk_runtime=false",
  "xnnpack": "--xla_cpu_use_xnnpack=true",
  "xnn_fusion_conv_dot": (
    _YNN + " --xla_cpu_experimental_xnn_fusion_type="
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
  ),
  "onednn": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
  "taskset1": "",
}
# Timed by default; the rest compile to the same HLO as 'none' (see the 'hlo' rows) and are only checked.
TIMED_FLAGS = ["none", "ynn_dot_only", "ynn_off", "eigen_single_thread", "concurrency_scheduler", "taskset1"]

CODE_VARIANTS = {  # FAST_PATHS settings of the 'code' part, in the order they were tried
  "xla": {"matmul": False, "cpu_scatter": False, "cpu_grads": False},
  "matmul": {"matmul": True, "cpu_scatter": False, "cpu_grads": False},
  "subpixel_grads": {"matmul": True, "cpu_scatter": False, "cpu_grads": True},
  "current": {"matmul": True, "cpu_scatter": True, "cpu_grads": True},
}


def load() -> list[float]:
  return [round(v, 2) for v in os.getloadavg()]


def _median_s(fn, *args, repeats: int) -> float:
  """Median seconds of a jitted `fn(*args)` after one warm-up call (compile excluded)."""
  return common.median_time(lambda: fn(*args), warmup=1, repeats=repeats, sync=jax.block_until_ready)


# ------------------------------------------------------------------------------------------------ layers


def layer_shapes(spec) -> list[dict]:
  """Every convolution of `spec`: kind, input (h, w, c), kernel, stride, padding, output channels."""
  out, size, c_in = [], spec.image_size, spec.channels
  for i, c in enumerate(spec.encoder):
    out.append(
      dict(
        kind="conv", index=i, h=size, c_in=c_in, c_out=c.features, kernel=c.kernel, stride=c.stride, padding=c.padding
      )
    )
    size, c_in = presets.conv_out(size, c), c.features
  h, _, c_in = spec.decoder_input
  for i, c in enumerate(spec.decoder):
    c_out = spec.channels if i == len(spec.decoder) - 1 else c.features
    out.append(
      dict(
        kind="conv_transpose", index=i, h=h, c_in=c_in, c_out=c_out, kernel=c.kernel, stride=c.stride, padding=c.padding
      )
    )
    h, c_in = presets.conv_transpose_out(h, c), c_out
  return out


def _layer_fn(layer: dict, variant: str):
  """(f(x, w) -> y, x layout transform) of one layer under `variant`."""
  s, p = layer["stride"], layer["padding"]
  if layer["kind"] == "conv":
    if variant == "xla_nchw":
      return lambda x, w: lax.conv_general_dilated(
        x, w, (s, s), ((p, p), (p, p)), dimension_numbers=("NCHW", "OIHW", "NCHW")
      )
    return lambda x, w: layers.conv_general_dilated(
      x, w, (s, s), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
  if variant == "lax_conv_transpose":  # what nnx.ConvTranspose computes (zero-dilated input), for reference
    k = layer["kernel"]
    return lambda x, w: lax.conv_transpose(
      x, w[::-1, ::-1], (s, s), ((k - 1 - p, k - 1 - p),) * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
  return lambda x, w: layers.conv_transpose(x, w, stride=s, padding=p)


class _Settings:
  """Context: `layers.FAST_PATHS` and `layers.cpu_grad_modes` set for one measurement, restored after."""

  def __init__(self, fast_paths: dict, modes: tuple[str, str] | None = None):
    self.fast_paths, self.modes = fast_paths, modes

  def __enter__(self):
    self.saved = dict(layers.FAST_PATHS), layers.cpu_grad_modes
    layers.FAST_PATHS.update(self.fast_paths)
    if self.modes is not None:
      layers.cpu_grad_modes = lambda *_: self.modes

  def __exit__(self, *exc):
    layers.FAST_PATHS.update(self.saved[0])
    layers.cpu_grad_modes = self.saved[1]


def time_layer(layer: dict, batch: int, *, repeats: int) -> list[dict]:
  """Forward / input-gradient / weight-gradient seconds of one layer, per implementation."""
  rng = np.random.default_rng(0)
  h, k = layer["h"], layer["kernel"]
  x = jnp.asarray(rng.uniform(-1, 1, (batch, h, h, layer["c_in"])), jnp.float32)
  w = jnp.asarray(rng.normal(0, 0.05, (k, k, layer["c_in"], layer["c_out"])), jnp.float32)
  off = CODE_VARIANTS["xla"]
  out_hw = (
    presets.conv_out(h, presets.ConvSpec(1, k, layer["stride"], layer["padding"]))
    if layer["kind"] == "conv"
    else presets.conv_transpose_out(h, presets.ConvSpec(1, k, layer["stride"], layer["padding"]))
  )
  # (name, settings, which of fwd/dx/dw to time)
  variants = [("xla", _Settings(off), ("fwd", "dx", "dw"))]
  single = (layer["kind"] == "conv" and out_hw == 1) or (layer["kind"] == "conv_transpose" and h == 1)
  grads = CODE_VARIANTS["subpixel_grads"]  # custom gradients of the (sub-pixel form's) convolution
  if single:
    variants.append(("matmul", _Settings(CODE_VARIANTS["matmul"]), ("fwd", "dx", "dw")))
  else:
    variants.append(("explicit input grad", _Settings(grads, ("explicit", "xla")), ("dx",)))
    for mode in ("taps", "im2col", "patches"):
      variants.append((f"weight grad {mode}", _Settings(grads, ("xla", mode)), ("dw",)))
    if layer["kind"] == "conv_transpose":
      variants.append(("scatter", _Settings(CODE_VARIANTS["current"]), ("fwd", "dx", "dw")))
  variants.append(("current", _Settings(CODE_VARIANTS["current"]), ("fwd", "dx", "dw")))
  variants.append(
    ("xla_nchw" if layer["kind"] == "conv" else "lax_conv_transpose", _Settings(off), ("fwd", "dx", "dw"))
  )
  rows = []
  for name, settings, parts in variants:
    f = _layer_fn(layer, name)
    xi, wi = x, w
    if name == "xla_nchw":
      xi, wi = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    row = {
      "layer": f"{layer['kind']} {layer['index']}: {h}x{h}x{layer['c_in']} -> {out_hw}x{out_hw}x{layer['c_out']} "
      f"k{k} s{layer['stride']} p{layer['padding']}",
      "impl": name,
      "batch": batch,
    }
    with settings:
      y = jax.jit(f)(xi, wi)
      ct = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
      fns = {
        "fwd": jax.jit(f),
        "dx": jax.jit(jax.grad(lambda a, b: jnp.vdot(f(a, b), ct), 0)),
        "dw": jax.jit(jax.grad(lambda a, b: jnp.vdot(f(a, b), ct), 1)),
      }
      for part in parts:
        try:
          row[f"{part}_ms"] = 1e3 * _median_s(fns[part], xi, wi, repeats=repeats)
        except Exception as e:  # noqa: BLE001 -- record and go on
          row[f"{part}_error"] = common.error_message(e)
    rows.append(row)
    print(row, flush=True)
  return rows


def part_layers(args) -> dict:
  """The per-layer table, `--layer-rounds` times over (all layers per round); medians over rounds."""
  samples: dict[tuple, list[dict]] = {}
  before = load()
  for _ in range(args.layer_rounds):
    for name in args.presets:
      for layer in layer_shapes(presets.get_preset(name)):
        for r in time_layer(layer, args.layer_batch, repeats=args.layer_repeats):
          samples.setdefault((name, r["layer"], r["impl"]), []).append(r)
  rows = []
  for (name, layer, impl), runs in samples.items():
    row = {"preset": name, "layer": layer, "impl": impl, "batch": args.layer_batch, "rounds": len(runs)}
    for part in ("fwd", "dx", "dw"):
      values = [r[f"{part}_ms"] for r in runs if f"{part}_ms" in r]
      if values:
        row[f"{part}_ms"] = statistics.median(values)
        row[f"{part}_ms_all"] = [round(v, 3) for v in values]
    rows.append(row)
  return {"load_before": before, "load_after": load(), "rows": rows}


# ------------------------------------------------------------------------------------------------- steps


def _torch_step(spec, batch: int, threads: int | None, repeats: int) -> dict:
  from benchmarks import torch_autoencoder  # noqa: PLC0415 -- torch only where needed

  r = torch_autoencoder.time_torch_step(
    spec, batch, mode="fp32", device="cpu", steps=repeats, warmup=2, penalty_size=batch, num_threads=threads
  )
  return {k: r.get(k) for k in ("step_s", "img_per_s", "loss", "num_threads", "error")}


def _jax_step(spec, batch: int, fast_paths: dict, *, steps_per_call: int, repeats: int) -> dict:
  with _Settings(fast_paths):
    try:
      r = time_jax_step(spec, batch, dtype="float32", steps_per_call=steps_per_call, repeats=repeats)
    except Exception as e:  # noqa: BLE001
      return {"error": common.error_message(e)}
  return {
    "step_s": r.get("step_s"),
    "img_per_s": r.get("img_per_s"),
    "steps_per_call": r.get("steps_per_call"),
    "compile_s": r.get("compile_s", r.get("first_call_s")),
    "loss": r.get("loss"),
  }


def _summarise(samples: dict[str, list[dict]]) -> list[dict]:
  """Median img/s (and compile seconds) over rounds per (preset, impl)."""
  rows = []
  for key, runs in samples.items():
    preset, impl = key.split("|", 1)
    ok = [r for r in runs if "img_per_s" in r and r["img_per_s"]]
    row = {
      "preset": preset,
      "impl": impl,
      "rounds": len(ok),
      "img_per_s": statistics.median(r["img_per_s"] for r in ok) if ok else None,
      "img_per_s_all": [round(r["img_per_s"], 2) for r in ok],
    }
    compiles = [r["compile_s"] for r in ok if r.get("compile_s")]
    if compiles:
      row["compile_s"] = statistics.median(compiles)
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
      row["error"] = errors[0]
    rows.append(row)
  return rows


def part_code(args, variants=None, *, torch_threads=None, spc=None) -> dict:
  """Rounds of: each JAX code variant, then PyTorch fp32 at each thread setting, per preset."""
  variants = variants or args.code_variants
  torch_threads = args.torch_threads if torch_threads is None else torch_threads
  samples: dict[str, list[dict]] = {}
  before = load()
  for rnd in range(args.rounds):
    for name in args.presets:
      spec = presets.get_preset(name)
      for v in variants:
        for k, rolled in spc or [(args.steps_per_call, False)]:
          label = f"jax {v}" + (f" spc={k}" + (" rolled" if rolled else "") if spc else "")
          with _rolled_scan(rolled):
            r = _jax_step(spec, args.batch, CODE_VARIANTS[v], steps_per_call=k, repeats=_repeats(args, name))
          samples.setdefault(f"{name}|{label}", []).append({**r, "load": load()})
          print(f"round {rnd} {name} {label}: {r}", flush=True)
      for t in torch_threads:
        label = f"torch fp32 threads={t or 'default'}"
        r = _torch_step(spec, args.batch, t or None, args.torch_repeats)
        samples.setdefault(f"{name}|{label}", []).append({**r, "load": load()})
        print(f"round {rnd} {name} {label}: {r}", flush=True)
  return {"load_before": before, "load_after": load(), "rows": _summarise(samples), "samples": samples}


def _repeats(args, preset: str) -> int:
  return args.repeats_large if preset == "deepsmote_mnist" else args.repeats


class _rolled_scan:
  """Context: `loop.compile_steps` with a rolled scan (unroll=1) instead of the CPU's full unroll."""

  def __init__(self, rolled: bool):
    self.rolled = rolled

  def __enter__(self):
    self.saved = loop.compile_steps
    if self.rolled:
      loop.compile_steps = functools.partial(self.saved, unroll=1)

  def __exit__(self, *exc):
    loop.compile_steps = self.saved


def part_spc(args) -> dict:
  """Steps per compiled call (unrolled, as the loop does on the CPU, and rolled), current code, with PyTorch
  (default threads) beside; the loop's CPU cap is lifted in this process only."""
  saved = loop.CPU_MAX_STEPS_PER_CALL
  loop.CPU_MAX_STEPS_PER_CALL = max(args.spc)
  cases = [(k, False) for k in args.spc] + [(k, True) for k in args.spc if k > 1]
  try:
    return part_code(args, ["current"], torch_threads=[0], spc=cases)
  finally:
    loop.CPU_MAX_STEPS_PER_CALL = saved


def part_hlo(args) -> dict:
  """What XLA compiles a small convolution + dot gradient to under the current XLA_FLAGS: a hash of the
  optimised HLO and the fusion kinds, so a flag that changes nothing shows as such."""
  import hashlib  # noqa: PLC0415
  import re  # noqa: PLC0415

  x, w = jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 64))

  def loss(x, w):
    y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.tanh(y.reshape(8, -1) @ jnp.ones((16 * 16 * 64, 10))))

  text = jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile().as_text()
  return {
    "hlo_md5": hashlib.md5(text.encode()).hexdigest()[:10],
    "fusion_kinds": sorted(set(re.findall(r'"kind":"(\w+)"', text)) | set(re.findall(r"kind=(k\w+)", text))),
    "plain_convolutions": len(re.findall(r"= \S+ convolution\(", text)),
    "plain_dots": len(re.findall(r"= \S+ dot\(", text)),
  }


def _subprocess(parts: list[str], variant: str, args, extra: list[str]) -> tuple[dict | None, str, float]:
  """Runs this script's `parts` in a fresh process under XLA_FLAGS variant `variant`: (payload, error, wall)."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + FLAG_VARIANTS[variant]).strip()
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "r.json"
    cmd = [
      sys.executable,
      __file__,
      "--parts",
      *parts,
      "--presets",
      *args.presets,
      "--batch",
      str(args.batch),
      "--repeats",
      str(args.repeats),
      "--repeats-large",
      str(args.repeats_large),
      "--torch-repeats",
      str(args.torch_repeats),
      "--layer-batch",
      str(args.layer_batch),
      "--layer-repeats",
      str(args.layer_repeats),
      "--layer-rounds",
      str(args.layer_rounds),
      "--json",
      str(out),
      "--no-machine",
      *extra,
    ]
    if variant == "taskset1":
      cmd = ["taskset", "-c", "0"] + cmd
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
      return None, " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-400:], wall
    return json.loads(out.read_text()), "", wall


def part_flags(args) -> dict:
  """Each XLA_FLAGS variant in a fresh subprocess: its HLO check (all variants), then in rounds the current
  code's step with PyTorch fp32 (default threads) beside it (the timed variants)."""
  before = load()
  hlo = {}
  for variant in FLAG_VARIANTS:
    payload, err, _ = _subprocess(["hlo"], variant, args, [])
    hlo[variant] = {"xla_flags": FLAG_VARIANTS[variant], **(payload["hlo"] if payload else {"error": err})}
    print(f"hlo {variant}: {hlo[variant]}", flush=True)
  samples: dict[str, list[dict]] = {}
  for rnd in range(args.rounds):
    for variant in args.flags:
      payload, err, wall = _subprocess(
        ["code"], variant, args, ["--rounds", "1", "--code-variants", "current", "--torch-threads", "0"]
      )
      if payload is None:
        for name in args.presets:
          samples.setdefault(f"{name}|{variant}: jax current", []).append({"error": err})
        print(f"round {rnd} {variant}: failed: {err}", flush=True)
        continue
      for row in payload["code"]["rows"]:
        sample = {
          "img_per_s": row["img_per_s"],
          "compile_s": row.get("compile_s"),
          "wall_s": wall,
          "load": payload["code"]["load_after"],
        }
        if row.get("error"):
          sample["error"] = row["error"]
        samples.setdefault(f"{row['preset']}|{variant}: {row['impl']}", []).append(sample)
      print(
        f"round {rnd} {variant}: {[(r['preset'], r['impl'], r['img_per_s']) for r in payload['code']['rows']]}",
        flush=True,
      )
  return {
    "load_before": before,
    "load_after": load(),
    "hlo": hlo,
    "flags": {v: FLAG_VARIANTS[v] for v in args.flags},
    "rows": _summarise(samples),
    "samples": samples,
  }


def part_layer_flags(args) -> dict:
  """The 'layers' table under each of --layer-flags, each in a fresh subprocess."""
  rows, before = [], load()
  for variant in args.layer_flags:
    payload, err, _ = _subprocess(["layers"], variant, args, [])
    if payload is None:
      rows.append({"flags": variant, "error": err})
      continue
    rows += [{"flags": variant, **r} for r in payload["layers"]["rows"]]
  return {"load_before": before, "load_after": load(), "rows": rows}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(
    "--parts",
    nargs="+",
    default=["layers", "layer_flags", "code", "spc", "flags"],
    choices=["layers", "layer_flags", "code", "spc", "flags", "hlo"],
  )
  parser.add_argument("--presets", nargs="+", default=["tiny_64", "deepsmote_mnist"])
  parser.add_argument("--batch", type=int, default=32, help="B (the penalty sample is B images too)")
  parser.add_argument("--layer-batch", type=int, default=32, help="images per call in the layer table")
  parser.add_argument("--layer-repeats", type=int, default=5)
  parser.add_argument("--layer-rounds", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per JAX measurement")
  parser.add_argument("--repeats-large", type=int, default=3, help="timed calls per JAX deepsmote_mnist measurement")
  parser.add_argument("--torch-repeats", type=int, default=10, help="timed steps per PyTorch measurement")
  parser.add_argument("--steps-per-call", type=int, default=2)
  parser.add_argument("--spc", nargs="+", type=int, default=[1, 2, 4])
  parser.add_argument("--code-variants", nargs="+", default=list(CODE_VARIANTS), choices=list(CODE_VARIANTS))
  parser.add_argument("--torch-threads", nargs="+", type=int, default=[0, 2, 1], help="0: PyTorch's default")
  parser.add_argument("--flags", nargs="+", default=TIMED_FLAGS, choices=list(FLAG_VARIANTS))
  parser.add_argument(
    "--layer-flags",
    nargs="+",
    default=["ynn_off"],
    choices=list(FLAG_VARIANTS),
    help="XLA_FLAGS variants of the 'layer_flags' part",
  )
  parser.add_argument("--json", default=str(pathlib.Path(__file__).parent / "results" / "cpu_tuning.json"))
  parser.add_argument("--no-machine", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  payload = {
    "benchmark": "cpu_tuning",
    "argv": sys.argv[1:] if argv is None else list(argv),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "batch": args.batch,
  }
  if not args.no_machine:
    payload["machine"] = common.machine_info()
  payload["load_start"] = load()
  parts = {
    "layers": part_layers,
    "layer_flags": part_layer_flags,
    "code": part_code,
    "spc": part_spc,
    "flags": part_flags,
    "hlo": part_hlo,
  }
  for part in args.parts:
    t0 = time.perf_counter()
    payload[part] = parts[part](args)
    payload[part]["wall_s"] = time.perf_counter() - t0
    if part in ("layers", "layer_flags"):
      common.print_table(
        payload[part]["rows"], ["flags", "preset", "layer", "impl", "fwd_ms", "dx_ms", "dw_ms"], max_width=60
      )
    elif part == "hlo":
      print(payload[part])
    else:
      common.print_table(
        payload[part]["rows"], ["preset", "impl", "img_per_s", "compile_s", "rounds", "error"], max_width=60
      )
  payload["load_end"] = load()
  common.write_json(args.json, payload)
  print(f"wrote {args.json}")
  return payload


if __name__ == "__main__":
  main()
