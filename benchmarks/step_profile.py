"""Where the DeepSMOTE step's time goes on the device: a kernel profile per dtype and a per-layer table.

  python benchmarks/step_profile.py --cases amoled_scratch_396:1:100 --dtypes bfloat16 float32 \
      --json $OUT/f_step_profile.json --trace-dir $OUT/traces        # on the GPU (gpu_check.sh part f)

Parts (--parts, both by default):
  trace   the compiled multi-step call that benchmarks/autoencoder_step.py times, run --trace-calls times under
          `jax.profiler.trace` with a Perfetto trace; the device's events (processes '/device:...'; on the
          CPU backend, XLA's compute threads) summed by name and by HLO op where the event names one. Each
          kernel is put in a coarse class by its name (library convolution/matmul, XLA fusion, copy or
          transpose, reduction, other), so the share of device time per class and dtype reads at a glance.
  layers  every convolution of the preset as the model computes it (`layers.conv_general_dilated`,
          `layers.conv_transpose`): value and gradients with respect to input and kernel in one jitted call,
          at B images, per dtype, median of --repeats calls after a warm-up (compile excluded); and after each
          convolution the model follows with BatchNorm, that BatchNorm + activation in train mode
          (`TorchBatchNorm`, value and gradients), with the step's (B,) row mask and without one -- the
          step always passes a mask -- so the table says what the normalisation costs beside the convolution.
No TensorFlow is imported. The JSON holds every row; the Markdown beside it the tables.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import common, jax_steps  # noqa: E402
from benchmarks.autoencoder_step import EDGES, parse_case, prepare_jax_step  # noqa: E402
from deepsmote_jax.models import layers, presets  # noqa: E402
from deepsmote_jax.models.autoencoder import BN_SETTINGS  # noqa: E402
from deepsmote_jax.models.batch_norm import TorchBatchNorm  # noqa: E402
from deepsmote_jax.train import loop  # noqa: E402
from deepsmote_jax.train.precision import compute_dtype  # noqa: E402

# Coarse kernel classes by name, first match wins (cuDNN/cuBLAS kernel names carry these fragments).
KERNEL_CLASSES = (
  (
    "convolution/matmul (library)",
    ("convolution", "conv_", "xmma", "cudnn", "gemm", "cutlass", "implicit", "wgrad", "dgrad", "ynn_fusion"),
  ),
  ("copy/transpose", ("copy", "transpose", "memcpy", "memset")),
  ("reduction", ("reduce", "reduction")),
  ("XLA fusion", ("fusion",)),
)


_CPU_WRAPPERS = ("ThunkExecutor", "SlinkyThreadPool")


def kernel_class(name: str) -> str:
  low = name.lower()
  for label, fragments in KERNEL_CLASSES:
    if any(f in low for f in fragments):
      return label
  return "other"


def device_events(trace: dict | list) -> tuple[list[dict], str]:
  """Complete ('X') events that ran on the device, and where they came from.

  A GPU/TPU trace has processes named '/device:...'; a CPU trace has only '/host:CPU', whose XLA compute
  threads ('tf_XLA...') stand in for the device.
  """
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  meta = [e for e in events if e.get("ph") == "M"]
  procs = {e["pid"]: e.get("args", {}).get("name", "") for e in meta if e.get("name") == "process_name"}
  threads = {
    (e["pid"], e.get("tid")): e.get("args", {}).get("name", "") for e in meta if e.get("name") == "thread_name"
  }
  complete = [e for e in events if e.get("ph") == "X" and e.get("dur") is not None]
  device_pids = {pid for pid, name in procs.items() if name.startswith("/device:")}
  if device_pids:
    return [e for e in complete if e["pid"] in device_pids], "device"
  host = [e for e in complete if threads.get((e["pid"], e.get("tid")), "").startswith("tf_XLA")]
  # The executor's own spans enclose the op events: counting them would count the time twice.
  return [e for e in host if not e.get("name", "").startswith(_CPU_WRAPPERS)], "XLA host threads"


def summarize_trace(trace: dict | list, *, steps: int, top: int = 25) -> dict:
  """Device time per step by kernel name, by HLO op (where named) and by kernel class."""
  events, source = device_events(trace)
  by_name, by_op, by_class, count = (collections.Counter() for _ in range(4))
  for e in events:
    dur = float(e["dur"])  # microseconds
    name = e.get("name", "?")
    by_name[name] += dur
    count[name] += 1
    op = (e.get("args") or {}).get("hlo_op")
    if op:
      by_op[op] += dur
    by_class[kernel_class(name)] += dur
  total = sum(by_name.values())

  def rows(counter, key):
    out = []
    for name, dur in counter.most_common(top):
      row = {key: name, "ms_per_step": dur / 1e3 / steps, "share": dur / total if total else None}
      if key == "kernel":
        row["calls_per_step"] = count[name] / steps
        row["class"] = kernel_class(name)
      out.append(row)
    return out

  return {
    "source": source,
    "events": len(events),
    "device_ms_per_step": total / 1e3 / steps,
    "by_class": rows(by_class, "class"),
    "by_kernel": rows(by_name, "kernel"),
    "by_hlo_op": rows(by_op, "hlo_op"),
  }


def trace_step(spec, batch: int, dtype: str, *, steps_per_call: int, calls: int, top: int, keep_dir=None) -> dict:
  """The multi-step call traced over `calls` calls (after a warm-up call), summarised per step."""
  setup = prepare_jax_step(spec, batch, dtype=dtype, steps_per_call=steps_per_call)
  k = setup.cfg.steps_per_call
  call, compile_s, _ = jax_steps.compile_multistep(setup, seed=0)
  jax.block_until_ready(call())  # warm-up, outside the trace
  log_dir = pathlib.Path(keep_dir) if keep_dir else pathlib.Path(tempfile.mkdtemp(prefix="step_profile_"))
  t0 = time.perf_counter()
  with jax.profiler.trace(str(log_dir), create_perfetto_trace=True):
    for _ in range(calls):
      m = call()
    jax.block_until_ready(m)
  wall = time.perf_counter() - t0
  files = sorted(log_dir.glob("plugins/profile/*/perfetto_trace.json.gz"))
  if not files:
    raise RuntimeError(f"no perfetto_trace.json.gz under {log_dir}")
  with gzip.open(files[-1], "rt") as f:
    summary = summarize_trace(json.load(f), steps=calls * k, top=top)
  return {
    "preset": spec.name,
    "channels": spec.channels,
    "batch": batch,
    "dtype": dtype,
    "compile_s": compile_s,
    "traced_wall_ms_per_step": 1e3 * wall / (calls * k),
    "trace_file": str(files[-1]),
    **summary,
  }


def time_layers(spec, batch: int, dtype: str, *, repeats: int, norms: bool = True) -> list[dict]:
  """Forward + both gradients of every convolution of `spec`, as the model computes it, at `batch` images."""
  from benchmarks.cpu_tuning import layer_shapes  # the per-layer shapes the CPU tuning measured

  dt = compute_dtype(dtype)
  rng = np.random.default_rng(0)
  rows = []
  for layer in layer_shapes(spec):
    h, k, s, p = layer["h"], layer["kernel"], layer["stride"], layer["padding"]
    x = jnp.asarray(rng.uniform(-1, 1, (batch, h, h, layer["c_in"])), dt)
    w = jnp.asarray(rng.normal(0, 0.05, (k, k, layer["c_in"], layer["c_out"])), jnp.float32)
    if layer["kind"] == "conv":
      f = lambda a, b, s=s, p=p: layers.conv_general_dilated(  # noqa: E731
        a, b.astype(dt), (s, s), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
      out = presets.conv_out(h, presets.ConvSpec(1, k, s, p))
    else:
      f = lambda a, b, s=s, p=p: layers.conv_transpose(a, b.astype(dt), stride=s, padding=p)  # noqa: E731
      out = presets.conv_transpose_out(h, presets.ConvSpec(1, k, s, p))
    loss = lambda a, b, f=f: jnp.sum(f(a, b).astype(jnp.float32) ** 2)  # noqa: E731
    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    row = {
      "preset": spec.name,
      "dtype": dtype,
      "batch": batch,
      "layer": f"{layer['kind']} {layer['index']}: {h}x{h}x{layer['c_in']} -> {out}x{out}x{layer['c_out']} "
      f"k{k} s{s} p{p}",
    }
    rows.append(_timed(row, lambda: fn(x, w), repeats))
    print(row, flush=True)
    normed = (layer["kind"] == "conv" and layer["index"] > 0) or (
      layer["kind"] == "conv_transpose" and layer["index"] < len(spec.decoder) - 1
    )
    if normed and norms:
      for masked in (True, False):
        rows.append(_time_norm(row["layer"], spec.name, batch, dtype, out, layer["c_out"], masked, repeats))
        print(rows[-1], flush=True)
  return rows


def _time_norm(after: str, preset: str, batch: int, dtype: str, size: int, channels: int, masked: bool, repeats: int):
  """TorchBatchNorm (train mode) + LeakyReLU on a (batch, size, size, channels) map: value and gradients."""
  dt = compute_dtype(dtype)
  norm = TorchBatchNorm(channels, dtype=dt, rngs=nnx.Rngs(0), **BN_SETTINGS)
  graphdef, params, stats = loop.split_model(norm)  # plain arrays, merged inside the traced function
  x = jnp.asarray(np.random.default_rng(1).normal(size=(batch, size, size, channels)), dt)
  mask = jnp.ones((batch, 1, 1, 1), bool) if masked else None  # an argument, as in the step: not folded away

  def loss(p, a, st, m):
    bn = loop.merge_model(graphdef, p, st)
    y = nnx.leaky_relu(bn(a, use_running_average=False, mask=m), 0.2)
    return jnp.sum(y.astype(jnp.float32) ** 2)

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  row = {
    "preset": preset,
    "dtype": dtype,
    "batch": batch,
    "layer": f"  BatchNorm{' (masked)' if masked else ''} + activation after {after.split(':')[0]}: "
    f"{size}x{size}x{channels}",
  }
  return _timed(row, lambda: fn(params, x, stats, mask), repeats)


def _timed(row: dict, call, repeats: int) -> dict:
  """`row` with the median ms of `call()` after a warm-up (compile excluded), or the error it raised."""
  try:
    row["fwd_bwd_ms"] = 1e3 * common.median_time(call, warmup=1, repeats=repeats, sync=jax.block_until_ready)
  except Exception as e:  # noqa: BLE001 - record and go on
    row["error"] = common.error_message(e)
  return row


TRACE_COLUMNS = ["dtype", "class", "kernel", "hlo_op", "ms_per_step", "share", "calls_per_step"]
LAYER_COLUMNS = ["preset", "dtype", "batch", "layer", "fwd_bwd_ms", "error"]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", type=parse_case, nargs="+", default=[("tiny_64", 1, 8)], help="preset:channels:batch")
  parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
  parser.add_argument("--parts", nargs="+", default=["trace", "layers"], choices=["trace", "layers"])
  parser.add_argument("--steps-per-call", type=int, default=10)
  parser.add_argument("--trace-calls", type=int, default=3)
  parser.add_argument("--top", type=int, default=25, help="rows per trace table")
  parser.add_argument("--repeats", type=int, default=10, help="timed calls per layer")
  parser.add_argument(
    "--norm-dtypes", nargs="*", default=None, help="dtypes whose layer table adds the BatchNorm rows (default: all)"
  )
  parser.add_argument("--trace-dir", help="keep the traces here (default: a temporary folder)")
  parser.add_argument("--json", default=None, help="default benchmarks/results/step_profile_<backend>.json")
  args = parser.parse_args(argv)

  traces, layer_rows = [], []
  for name, channels, batch in args.cases:
    spec = presets.get_preset(name, **({"channels": channels} if channels else {}))
    for dtype in args.dtypes:
      if "trace" in args.parts:
        keep = pathlib.Path(args.trace_dir) / f"{name}_{dtype}" if args.trace_dir else None
        try:
          t = trace_step(
            spec, batch, dtype, steps_per_call=args.steps_per_call, calls=args.trace_calls, top=args.top, keep_dir=keep
          )
        except Exception as e:  # noqa: BLE001 - a failed trace is a result; the layer table still runs
          t = {
            "preset": name,
            "channels": spec.channels,
            "batch": batch,
            "dtype": dtype,
            "error": common.error_message(e),
          }
        traces.append(t)
        print(
          {k: v for k, v in t.items() if k not in ("by_kernel", "by_hlo_op", "by_class")}
          | {"by_class": t.get("by_class")},
          flush=True,
        )
      if "layers" in args.parts and not dtype.endswith(EDGES):  # its layers are the two dtypes' rows
        norms = args.norm_dtypes is None or dtype in args.norm_dtypes
        layer_rows += time_layers(spec, batch, dtype, repeats=args.repeats, norms=norms)

  info = common.machine_info()
  out = args.json or (
    pathlib.Path(__file__).parent / "results" / f"step_profile_{info.get('jax_backend', jax.default_backend())}.json"
  )
  payload = {
    "benchmark": "step_profile",
    "machine": info,
    "settings": vars(args) | {"cases": [":".join(map(str, c)) for c in args.cases]},
    "traces": traces,
    "rows": layer_rows,
  }
  common.write_json(out, payload)
  md = [f"# DeepSMOTE step profile ({common.device_label(info)}, {info.get('date_utc')})", ""]
  for t in traces:
    head = f"## {t['preset']} x{t['channels']}ch B={t['batch']} {t['dtype']}"
    if t.get("error"):
      md += [head, "", f"error: {t['error']}", ""]
      continue
    md += [
      head,
      "",
      f"Device time {t['device_ms_per_step']:.2f} ms/step ({t['source']}, {t['events']} events); traced wall "
      f"{t['traced_wall_ms_per_step']:.2f} ms/step; compile {t['compile_s']:.1f} s.",
      "",
    ]
    for key in ("by_class", "by_kernel", "by_hlo_op"):
      if t.get(key):
        md += [
          common.markdown_table(
            [r | {"dtype": t["dtype"]} for r in t[key]], [c for c in TRACE_COLUMNS if c in t[key][0] or c == "dtype"]
          ),
          "",
        ]
  if layer_rows:
    md += [
      "## Convolutions: forward + input and kernel gradients",
      "",
      common.markdown_table(layer_rows, LAYER_COLUMNS),
      "",
    ]
  pathlib.Path(out).with_suffix(".md").write_text("\n".join(md))
  for t in traces:
    if t.get("by_class"):
      print(f"\n{t['preset']} B={t['batch']} {t['dtype']}: {t['device_ms_per_step']:.2f} ms/step on the device")
      common.print_table(
        t["by_kernel"][:12], ["class", "kernel", "ms_per_step", "share", "calls_per_step"], max_width=60
      )
  if layer_rows:
    print()
    common.print_table(layer_rows, LAYER_COLUMNS, max_width=60)
  print(f"wrote {out}")
  return payload


if __name__ == "__main__":
  main()
