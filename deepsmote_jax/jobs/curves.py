"""Training curves for the report: each run's `metrics.jsonl` as a PNG, and replayed into TensorBoard.

`metrics.jsonl` (written by `train.loop.MetricsWriter`) stays the source of truth: one JSON object per line
with `step`, the training means of each logged call (`loss`, `train_acc`; the autoencoder's `loss`, `recon`,
`penalty`), `images_per_s` and `time`, and, at each validation, `val_<metric>` lines (`val_average_precision`,
`val_neg_loss`; `val_psnr`, `val_ssim` with their `_per_class` lists) with `val_best_step`, the best step so
far. `plot_run` draws one panel per scalar with the run's best step marked; `replay_tensorboard` writes the
same scalars as TensorBoard event files through `clu.metric_writers` (TensorFlow and TensorBoard, the `data`
extra, imported only there).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil

import numpy as np

from deepsmote_jax import visualize

# Logged keys that are bookkeeping, not curves.
SKIP = {"step", "time", "images_per_s", "val_best_step"}
LABELS = {
  "loss": "training loss",
  "recon": "reconstruction loss",
  "penalty": "penalty loss",
  "train_acc": "training accuracy",
  "val_neg_loss": "validation log-likelihood (-loss)",
  "val_psnr": "validation PSNR (dB)",
  "val_ssim": "validation SSIM",
}


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The records of a metrics.jsonl (an unreadable last line, from a killed run, is dropped)."""
  out = []
  path = pathlib.Path(path)
  if not path.is_file():
    return out
  for line in path.read_text().splitlines():
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return out


def scalars(records: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{key: (steps, values)} of every finite scalar logged with a step, in the order keys first appear."""
  series: dict[str, list[tuple[int, float]]] = {}
  for r in records:
    if "step" not in r:
      continue
    for k, v in r.items():
      if k in SKIP or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        continue
      series.setdefault(k, []).append((int(r["step"]), float(v)))
  return {k: (np.array([s for s, _ in pts], np.int64), np.array([v for _, v in pts])) for k, pts in series.items()}


def best_step(records: list[dict], summary: dict | None = None) -> int | None:
  """The selected step: the run's train_summary.json `best_step`, else the last `val_best_step` logged."""
  if summary and summary.get("best_step") is not None:
    return int(summary["best_step"])
  logged = [r["val_best_step"] for r in records if r.get("val_best_step") is not None]
  return int(logged[-1]) if logged else None


def plot_run(records: list[dict], path: str | os.PathLike, *, title: str, best: int | None) -> pathlib.Path | None:
  """One panel per logged scalar (training first, then validation) against the step; the best step as a
  dashed line. None (nothing written) when the log has no scalars."""
  series = scalars(records)
  if not series:
    return None
  keys = [k for k in series if not k.startswith("val_")] + [k for k in series if k.startswith("val_")]
  cols = min(3, len(keys))
  rows = -(-len(keys) // cols)
  fig = visualize.figure((4.0 * cols, 2.8 * rows + 0.5))
  for i, key in enumerate(keys):
    ax = fig.add_subplot(rows, cols, i + 1)
    steps, values = series[key]
    ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, color="C1" if "val_" in key else "C0")
    if best is not None:
      ax.axvline(best, color="gray", linestyle="--", linewidth=1, label=f"best step {best}")
      at = values[steps == best]
      if at.size:
        ax.plot([best], [at[-1]], "*", color="C3", markersize=10)
    ax.set_title(LABELS.get(key, key), fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    if i == 0 and best is not None:
      ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  return path


def plot_file(jsonl: pathlib.Path, path: pathlib.Path, title: str) -> dict | None:
  """Curves of one run folder's metrics.jsonl (best step from its train_summary.json); a dict for the report
  (`path`, `best_step`, `keys`), or None without a log."""
  records = read_jsonl(jsonl)
  summary_file = jsonl.parent / "train_summary.json"
  summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
  best = best_step(records, summary)
  written = plot_run(records, path, title=title, best=best)
  if written is None:
    return None
  return {"path": str(written), "best_step": best, "keys": list(scalars(records))}


class TensorBoardUnavailable(RuntimeError):
  """clu, TensorFlow or TensorBoard is missing (the `data` extra)."""


def _summary_writer(logdir: pathlib.Path):
  try:
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # keep TF off the accelerator JAX uses
    from clu import metric_writers
  except ImportError as e:
    raise TensorBoardUnavailable(f"{e} (pip install 'deepsmote_jax[data]' brings clu, TensorFlow, TensorBoard)") from e
  except RuntimeError:  # TF's devices were initialised earlier in this process: keep them
    from clu import metric_writers
  return metric_writers.SummaryWriter(str(logdir))


def replay_tensorboard(records: list[dict], logdir: str | os.PathLike) -> dict:
  """Writes the scalars of `records` as TensorBoard event files into `logdir` (emptied first, so a rerun does
  not add a second copy); returns {'logdir', 'scalars': n written, 'tags'}."""
  logdir = pathlib.Path(logdir)
  if logdir.exists():
    shutil.rmtree(logdir)
  logdir.mkdir(parents=True)
  writer = _summary_writer(logdir)
  n, tags = 0, []
  try:
    for r in records:
      if "step" not in r:
        continue
      values = {
        k: float(v)
        for k, v in r.items()
        if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
      }
      if values:
        writer.write_scalars(int(r["step"]), values)
        n += len(values)
        tags += [k for k in values if k not in tags]
  finally:
    writer.flush()
    writer.close()
  return {"logdir": str(logdir), "scalars": n, "tags": tags}
