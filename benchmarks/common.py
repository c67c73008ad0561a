"""Helpers shared by the benchmarks: machine/version info, step timing, JSON output and a short table.

Nothing here imports JAX or PyTorch at module level, so the PyTorch baselines and the JAX benchmarks can
both use it (and it imports on a machine that has only one of them).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any


def _version(module_name: str) -> str | None:
  try:
    module = __import__(module_name)
  except Exception:  # noqa: BLE001 - absent or broken installs are both "not available"
    return None
  return str(getattr(module, "__version__", "unknown"))


def machine_info() -> dict[str, Any]:
  """Platform, CPU count, Python and library versions, and accelerator names (all imports guarded)."""
  info: dict[str, Any] = {
    "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "platform": platform.platform(),
    "machine": platform.machine(),
    "processor": platform.processor() or None,
    "cpu_count": os.cpu_count(),
    "python": sys.version.split()[0],
  }
  try:
    info["cpu_affinity"] = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    pass
  for name in ("numpy", "jax", "jaxlib", "flax", "optax", "torch", "torchvision"):
    info[name] = _version(name)

  try:
    import torch

    info["torch_cuda"] = torch.version.cuda
    info["torch_cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["torch_num_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
      info["torch_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
      info["torch_devices"] = []
  except Exception as e:  # noqa: BLE001
    info["torch_error"] = f"{type(e).__name__}: {e}" if _version("torch") else None

  gpus = nvidia_smi()
  if gpus:
    info["gpus"] = gpus
  try:
    import jax

    devices = jax.devices()
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [getattr(d, "device_kind", str(d)) for d in devices]
  except Exception as e:  # noqa: BLE001
    info["jax_error"] = f"{type(e).__name__}: {e}" if _version("jax") else None
  return {k: v for k, v in info.items() if v is not None}


def nvidia_smi() -> list[dict[str, str]]:
  """Name, driver and memory of each NVIDIA GPU as `nvidia-smi` reports them ([] without one)."""
  if not shutil.which("nvidia-smi"):
    return []
  fields = ("name", "driver_version", "memory.total")
  try:
    out = subprocess.run(
      ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=20,
      check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in out.splitlines() if line.strip()]


def device_label(info: dict[str, Any]) -> str:
  """One short name for the machine a result came from: the GPU (and driver), else the JAX device kind."""
  if info.get("gpus"):
    g = info["gpus"][0]
    return f"{g['name']} (driver {g['driver_version']})"
  kinds = info.get("jax_devices") or ["cpu"]
  return f"{kinds[0]} x{len(kinds)} ({info.get('cpu_count')} CPU cores)"


def jax_compiled_memory(compiled: Any) -> dict[str, float]:
  """Device memory one compiled JAX executable needs, from XLA's own accounting (MiB).

  `peak_mib` = arguments + outputs + temporaries - aliased (donated) buffers: what the call holds at its
  peak, independent of what else the process allocated before (unlike the device's running peak).
  """
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend/version reports it
    return {}
  if m is None:
    return {}
  mib = lambda b: float(b) / 2**20
  peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  return {"peak_mib": mib(peak), "temp_mib": mib(m.temp_size_in_bytes), "argument_mib": mib(m.argument_size_in_bytes)}


def jax_device_peak_mib() -> float | None:
  """The first JAX device's running peak of allocated memory (MiB), where the backend reports one (GPU/TPU)."""
  try:
    import jax

    stats = jax.devices()[0].memory_stats()
  except Exception:  # noqa: BLE001
    return None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20


def time_calls(
  fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 10, inner: int = 1, sync: Callable[[Any], Any] | None = None
) -> list[float]:
  """Seconds per call of `fn()`, one entry per repeat.

  Each repeat runs `fn` `inner` times, then `sync(last_result)` (e.g. `jax.block_until_ready`, or
  `lambda _: torch.cuda.synchronize()`), and records the elapsed time / inner. The `warmup` calls (compilation,
  autotuning, allocator growth) are synced and excluded.
  """
  if repeats < 1 or inner < 1:
    raise ValueError(f"repeats and inner must be >= 1, got repeats={repeats}, inner={inner}")
  sync = sync or (lambda _: None)
  out = None
  for _ in range(warmup):
    out = fn()
  sync(out)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(inner):
      out = fn()
    sync(out)
    times.append((time.perf_counter() - t0) / inner)
  return times


TORCH_MODES = ("fp32", "bf16_cl", "compile", "compile_bf16_cl")


def torch_mode(mode: str, device: Any = "auto") -> tuple[Any, Any, dict[str, Any]]:
  """A PyTorch baseline's `mode` (one of TORCH_MODES) on `device` ('auto' / None: CUDA where available).

  Returns (the torch.device, the autocast dtype or None, the result fields that name them: mode, device,
  device_name, compute_dtype, channels_last, compiled). 'bf16' modes run under bfloat16 autocast, '_cl'
  modes in channels_last layout, 'compile' modes torch.compile the loss.
  """
  import torch

  if mode not in TORCH_MODES:
    raise ValueError(f"mode must be one of {TORCH_MODES}, got {mode!r}")
  if device in (None, "auto"):
    device = "cuda" if torch.cuda.is_available() else "cpu"
  dev = torch.device(device)
  amp_dtype = torch.bfloat16 if "bf16" in mode else None
  fields = {
    "mode": mode,
    "device": str(dev),
    "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    "compute_dtype": "bfloat16 autocast" if amp_dtype else "float32",
    "channels_last": mode.endswith("_cl"),
    "compiled": mode.startswith("compile"),
  }
  return dev, amp_dtype, fields


def torch_autocast(device: Any, dtype: Any):
  """`torch.autocast` to `dtype` on `device`'s type; a no-op context for dtype None."""
  import torch

  if dtype is None:
    return contextlib.nullcontext()
  return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def torch_case(result: dict[str, Any], device: Any, num_threads: int | None):
  """Runs one PyTorch baseline case: intra-op threads set for it (and restored), a failure recorded in
  `result['error']` instead of raised (a failing mode is a result), the CUDA cache emptied after."""
  import torch

  before = torch.get_num_threads()
  if num_threads:
    torch.set_num_threads(num_threads)
  if getattr(device, "type", str(device)) == "cpu":
    result["num_threads"] = torch.get_num_threads()
  try:
    yield
  except Exception as e:  # noqa: BLE001
    result["error"] = error_message(e)
  finally:
    torch.set_num_threads(before)
    if getattr(device, "type", str(device)) == "cuda":
      torch.cuda.empty_cache()


def time_torch_steps(step: Callable[[], Any], device: Any, *, warmup: int, steps: int, chunk: int = 1) -> dict:
  """Times a PyTorch training step on `device`: median / min / max seconds per step, the last loss, and on
  CUDA the peak allocated memory (reset first). `step()` returns the detached loss tensor."""
  import torch

  cuda = getattr(device, "type", str(device)) == "cuda"
  sync = (lambda _: torch.cuda.synchronize(device)) if cuda else None
  if cuda:
    torch.cuda.reset_peak_memory_stats(device)
  last: list[Any] = [None]

  def run():
    last[0] = step()
    return last[0]

  times = time_calls(run, warmup=warmup, repeats=steps, inner=chunk, sync=sync)
  out = {"step_s": statistics.median(times), "step_s_min": min(times), "step_s_max": max(times), "loss": float(last[0])}
  if cuda:
    out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
  return out


def step_ms_rows(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
  """`results` for a table: each with 'step_ms', its 'step_s' in milliseconds (None where it has none)."""
  return [dict(r, step_ms=r["step_s"] * 1e3 if "step_s" in r else None) for r in results]


def median_time(
  fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 10, inner: int = 1, sync: Callable[[Any], Any] | None = None
) -> float:
  """Median seconds per call of `fn()` after `warmup` excluded calls (see `time_calls`)."""
  return statistics.median(time_calls(fn, warmup=warmup, repeats=repeats, inner=inner, sync=sync))


def error_message(e: BaseException, limit: int = 500) -> str:
  """'Type: message' on one line, cut to `limit` characters (compiler errors run to pages)."""
  text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
  return f"{type(e).__name__}: {text}"[:limit]


def _jsonable(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, (str, int, float, bool)) or obj is None:
    return obj
  if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch / jax scalars
    return obj.item()
  if isinstance(obj, pathlib.Path):
    return str(obj)
  return repr(obj)


def write_json(path: str | os.PathLike, payload: Any) -> pathlib.Path:
  """Writes `payload` as indented JSON (creating parent folders); non-JSON values are stringified."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")
  return path


def _cell(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, int):
    return f"{value:,}"
  if isinstance(value, float):
    if value != value:  # NaN
      return "nan"
    if abs(value) >= 100:
      return f"{value:,.0f}"
    if abs(value) >= 1:
      return f"{value:.2f}"
    return f"{value:.4g}"
  return str(value)


def format_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], *, max_width: int = 40) -> str:
  """A fixed-width text table of `columns` (missing values print as '-', long cells are cut)."""
  cells = [[_cell(r.get(c))[:max_width] for c in columns] for r in rows]
  widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
  line = lambda parts: "  ".join(p.ljust(w) for p, w in zip(parts, widths)).rstrip()
  out = [line(columns), line(["-" * w for w in widths])]
  out += [line(row) for row in cells]
  return "\n".join(out)


def markdown_table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
  """A GitHub Markdown table of `columns` (missing values print as '-')."""
  rows = list(rows)
  out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  out += ["| " + " | ".join(_cell(r.get(c)).replace("|", "/") for c in columns) + " |" for r in rows]
  return "\n".join(out)


def write_outputs(
  json_path: str | os.PathLike, payload: dict[str, Any], columns: Sequence[str], title: str
) -> pathlib.Path:
  """`payload` (with 'machine' and 'rows') as JSON, and beside it a Markdown page: title, machine, table.

  Both are written to temporary names and renamed, so a part killed mid-write never leaves a file that
  looks complete.
  """
  json_path = pathlib.Path(json_path)
  info = payload.get("machine", {})
  md = [
    f"# {title}",
    "",
    f"Machine: {device_label(info)}; {info.get('platform', '?')}; date {info.get('date_utc', '?')}.",
    "Versions: "
    + ", ".join(f"{k} {info[k]}" for k in ("python", "jax", "jaxlib", "flax", "torch", "torchvision") if info.get(k))
    + ".",
    "",
  ]
  if payload.get("settings"):
    md += ["Settings: " + "; ".join(f"{k} = {v}" for k, v in payload["settings"].items()) + ".", ""]
  md += [markdown_table(payload.get("rows", []), columns), ""]
  md += [f"- {note}" for note in payload.get("notes", [])]
  md_path = json_path.with_suffix(".md")
  tmp_md = md_path.with_name(md_path.name + ".tmp")
  tmp_md.parent.mkdir(parents=True, exist_ok=True)
  tmp_md.write_text("\n".join(md).rstrip() + "\n")
  tmp_json = write_json(json_path.with_name(json_path.name + ".tmp"), payload)
  os.replace(tmp_md, md_path)
  os.replace(tmp_json, json_path)
  return json_path


def publish(json_path: str | os.PathLike, payload: dict[str, Any], columns: Sequence[str], title: str) -> pathlib.Path:
  """`write_outputs`, then the table of `payload['rows']` and 'wrote <json_path>' printed."""
  path = write_outputs(json_path, payload, columns, title)
  print_table(payload["rows"], columns)
  print(f"wrote {json_path}")
  return path


# The timing columns of a training-step table (after the columns that name the case).
STEP_COLUMNS = ("batch", "impl", "img_per_s", "vs_best_torch", "step_s", "compile_s", "peak_mib", "error")


def torch_row(result: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
  """A PyTorch baseline result's `keys` for a table row, with 'peak_mib' (its CUDA peak; None without one)."""
  peak_gib = result.get("peak_mem_gib")
  return {**{k: result.get(k) for k in keys}, "peak_mib": peak_gib * 1024 if peak_gib is not None else None}


def add_speedups(rows: list[dict[str, Any]], same: Sequence[str]) -> None:
  """Sets each JAX row's 'vs_best_torch': its img/s over the best PyTorch row's with the same `same` fields.

  JAX rows have an 'impl' starting with 'jax', PyTorch ones with 'torch' (torchvision too); rows without
  img/s (errors) take no part.
  """
  for r in rows:
    if not r["impl"].startswith("jax") or not r.get("img_per_s"):
      continue
    best = [
      t["img_per_s"]
      for t in rows
      if t["impl"].startswith("torch") and t.get("img_per_s") and all(t[k] == r[k] for k in same)
    ]
    if best:
      r["vs_best_torch"] = r["img_per_s"] / max(best)


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], *, max_width: int = 40) -> None:
  """Prints `format_table(rows, columns)`."""
  print(format_table(rows, columns, max_width=max_width), flush=True)
