"""Latent SMOTE: deepsmote_jax.smote vs imbalanced-learn's SMOTE (and sklearn's k-NN), side by side.

Task per row: one minority class of n latent codes of dimension d, one new point per sample
(sampling_strategy='auto' against a majority class of 2n rows, k = 5), as in ../shared/PERFORMANCE.md.
Timed: the full resample (project `fit_resample` vs `imblearn.over_sampling.SMOTE.fit_resample`) and the
k-NN alone (project `nearest_neighbors` vs `sklearn.neighbors.NearestNeighbors(...).kneighbors`).
Times are medians of up to --repeats runs (fewer once --budget-s is spent); the project gets a warm-up
call first, timed and reported separately as first_call_s (compile included); the baselines compile
nothing and get no warm-up (their first_call_s is their first timed run). Memory: the extra host RSS peak
during a row (sampled from /proc every 2 ms), the
process's ru_maxrss, and on accelerators the device's peak_bytes_in_use.

From n = --once-from on, the project's resample is timed in one call (compile included, about a second)
and its k-NN row is skipped: at 1,000,000 points each call takes a minute or more on a GPU.
--tile-sweep measures the k-NN at --sweep-n for several (query x reference) tile sizes first (op
'knn_tiles') and runs the sizes from --sweep-n on with the fastest.

Runs without TensorFlow; a missing imbalanced-learn or scikit-learn skips its baseline with one line. Example:
  python benchmarks/smote.py                      # CPU defaults, a few minutes
  python benchmarks/smote.py --full --out $OUT/smote_gpu.json
  python benchmarks/smote.py --n 20000 1000000 --tile-sweep 1024 1024x8192 2048x16384 --sweep-n 100000
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from benchmarks import common as bench_common  # noqa: E402
from deepsmote_jax import smote  # noqa: E402


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
  """Highest RSS above the level at entry, sampled in a background thread."""

  def __enter__(self):
    self.start = _rss_bytes()
    self.peak = self.start
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll, daemon=True)
    self._thread.start()
    return self

  def _poll(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, _rss_bytes())
      time.sleep(0.002)

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _rss_bytes())
    self.extra_mib = (self.peak - self.start) / 2**20


def _time(fn, repeats: int, *, warmup: bool = True, budget_s: float = 20.0):
  """(first call s, median s, repeat times, extra peak RSS MiB over the repeats).

  With `warmup` the first call (compile, for the project) is timed apart and not in the median. Repeats
  stop early once `budget_s` is spent (at least one is always run), so the large rows stay affordable.
  """
  first = None
  if warmup:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
  times = []
  with PeakRss() as rss:
    while len(times) < repeats and (not times or sum(times) < budget_s):
      t0 = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t0)
  return (first if warmup else times[0]), statistics.median(times), times, rss.extra_mib


def tile_size(text: str) -> int | tuple[int, int]:
  """'1024' -> 1024 (both sides); '1024x8192' -> (query tile, reference tile)."""
  parts = text.lower().split("x")
  try:
    values = [int(v) for v in parts]
  except ValueError:
    values = []
  if len(values) not in (1, 2) or min(values, default=0) < 1:
    raise argparse.ArgumentTypeError(f"tile size {text!r}: give N or QxR with positive integers")
  return values[0] if len(values) == 1 else (values[0], values[1])


def _tile_label(tiles) -> str:
  return str(tiles) if isinstance(tiles, int) else f"{tiles[0]}x{tiles[1]}"


def _data(n: int, d: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  minority = rng.normal(0.5, 1.0, size=(n, d)).astype(np.float32)
  majority = rng.normal(0.0, 1.0, size=(2 * n, d)).astype(np.float32)
  X = np.concatenate([majority, minority])
  y = np.concatenate([np.zeros(2 * n, np.int64), np.ones(n, np.int64)])
  return X, y, minority


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--n", type=int, nargs="+", default=None, help="minority-class sizes")
  parser.add_argument("--d", type=int, nargs="+", default=[300, 512, 1024], help="latent dimensions")
  parser.add_argument(
    "--full", action="store_true", help="add n = 100,000 (baselines too) and 1,000,000 (project only)"
  )
  parser.add_argument(
    "--baseline-max-n",
    type=int,
    default=100_000,
    help="skip imblearn/sklearn above this n (they are quadratic in memory/time)",
  )
  parser.add_argument("--large-n", type=int, default=20_000, help="from this n on, only --large-d dimensions are run")
  parser.add_argument(
    "--large-d",
    type=int,
    nargs="+",
    default=[512],
    help="dimensions used for n >= --large-n (keeps the run affordable)",
  )
  parser.add_argument("--k", type=int, default=5)
  parser.add_argument(
    "--block-size",
    type=tile_size,
    default=None,
    help="k-NN tile edge (N, or QxR for query x reference); default 256 on CPU (faster there), 1024 on accelerators",
  )
  parser.add_argument(
    "--tile-sweep", type=tile_size, nargs="+", default=[], help="tile sizes to compare at --sweep-n first"
  )
  parser.add_argument("--sweep-n", type=int, default=100_000, help="points of the tile sweep (d: the first --large-d)")
  parser.add_argument(
    "--once-from", type=int, default=1_000_000, help="from this n on, time one resample call and skip the k-NN row"
  )
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument(
    "--budget-s", type=float, default=20.0, help="stop repeating a measurement after this many seconds"
  )
  parser.add_argument("--no-baselines", action="store_true")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results" / "smote_cpu.json")
  args = parser.parse_args(argv)

  if args.block_size is None:
    args.block_size = 256 if jax.default_backend() == "cpu" else 1024
  sizes = args.n or ([1000, 5000, 20000] + ([100_000, 1_000_000] if args.full else []))
  notes = []
  SMOTE = NearestNeighbors = None
  if not args.no_baselines:
    try:
      from sklearn.neighbors import NearestNeighbors
    except ImportError:
      notes.append("scikit-learn not installed: the k-NN baseline is skipped")
    try:
      from imblearn.over_sampling import SMOTE
    except ImportError:
      notes.append("imbalanced-learn not installed (carry its wheel): the SMOTE baseline is skipped")
  for note in notes:
    print(note, flush=True)

  settings = {
    "k": args.k,
    "block_size": _tile_label(args.block_size),
    "repeats": args.repeats,
    "task": "one minority class of n rows vs a majority of 2n rows, sampling_strategy='auto' "
    "(n new rows), float32 codes",
    "baselines": f"n <= {args.baseline_max_n}",
    "memory": "extra host RSS during the row; device peak = the device's running peak so far",
  }
  rows = []

  def record(**row):
    rows.append(row)
    print(json.dumps(row), flush=True)

  large_tiles = args.block_size
  if args.tile_sweep:
    d = args.large_d[0]
    minority_dev = jax.device_put(_data(args.sweep_n, d)[2])
    timed = []
    for tiles in args.tile_sweep:
      fn = lambda tiles=tiles: jax.block_until_ready(smote.nearest_neighbors(minority_dev, args.k, block_size=tiles))
      fields = dict(impl="deepsmote_jax nearest_neighbors", op="knn_tiles", n=args.sweep_n, d=d)
      fields["tiles"] = _tile_label(tiles)
      try:
        first, med, times, _ = _time(fn, args.repeats, budget_s=args.budget_s)
      except Exception as e:  # noqa: BLE001 - e.g. a tile too large for the device: a result
        record(**fields, error=bench_common.error_message(e))
        continue
      timed.append((med, tiles))
      record(**fields, first_call_s=first, median_s=med, times_s=times)
    if timed:
      large_tiles = min(timed, key=lambda t: t[0])[1]
      settings["tiles_from_sweep_n"] = _tile_label(large_tiles)
      print(f"tile sweep: {_tile_label(large_tiles)} is the fastest at n = {args.sweep_n:,}", flush=True)

  for n in sizes:
    tiles = large_tiles if args.tile_sweep and n >= args.sweep_n else args.block_size
    once = n >= args.once_from
    for d in args.d if n < args.large_n else args.large_d:
      X, y, minority = _data(n, d)
      key = jax.random.key(0)
      X_dev, minority_dev = jax.device_put(X), jax.device_put(minority)
      common_fields = dict(n=n, d=d, tiles=_tile_label(tiles))

      def project_resample():
        # The provenance record: the synthetic rows only, the same work as before (X_res would add a concatenation).
        result = smote.fit_resample(key, X_dev, y, k_neighbors=args.k, block_size=tiles, return_provenance=True)
        result.samples.block_until_ready()
        return result

      def project_knn():
        return jax.block_until_ready(smote.nearest_neighbors(minority_dev, args.k, block_size=tiles))

      project = [("deepsmote_jax fit_resample", "resample", project_resample)]
      if not once:
        project.append(("deepsmote_jax nearest_neighbors", "knn", project_knn))
      for impl, op, fn in project:
        try:
          if once:  # one call, compile included (about a second of it)
            first, med, times, rss = _time(fn, 1, warmup=False, budget_s=args.budget_s)
          else:
            first, med, times, rss = _time(fn, args.repeats, budget_s=args.budget_s)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory at the largest n: a result, not a crash
          record(impl=impl, op=op, **common_fields, error=bench_common.error_message(e))
          continue
        record(
          impl=impl,
          op=op,
          **common_fields,
          first_call_s=first,
          compile_s_approx=None if once else max(first - med, 0.0),
          timed="one call, compile included" if once else f"median of {len(times)} after a warm-up call",
          median_s=med,
          times_s=times,
          extra_rss_mib=rss,
          device_peak_mib=bench_common.jax_device_peak_mib(),
        )

      baselines = []
      if n <= args.baseline_max_n:
        if SMOTE is not None:
          sampler = SMOTE(k_neighbors=args.k, random_state=0)
          baselines.append(("imblearn SMOTE.fit_resample", "resample", lambda: sampler.fit_resample(X, y)))
        if NearestNeighbors is not None:
          baselines.append(
            (
              "sklearn NearestNeighbors.kneighbors",
              "knn",
              lambda: NearestNeighbors(n_neighbors=args.k + 1).fit(minority).kneighbors(minority),
            )
          )
      for impl, op, fn in baselines:  # they compile nothing: no warm-up
        first, med, times, rss = _time(fn, args.repeats, warmup=False, budget_s=args.budget_s)
        record(impl=impl, op=op, **common_fields, first_call_s=first, median_s=med, times_s=times, extra_rss_mib=rss)

  for r in rows:  # the project's rows against the baseline of the same op, n and d
    base = [
      b["median_s"]
      for b in rows
      if not b["impl"].startswith("deepsmote")
      and b.get("median_s")
      and (b["op"], b["n"], b["d"]) == (r["op"], r["n"], r["d"])
    ]
    if r["impl"].startswith("deepsmote") and r.get("median_s") and base:
      r["speedup"] = base[0] / r["median_s"]
  info = bench_common.machine_info()
  info["load_avg_at_end"] = os.getloadavg()
  info["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  for name in ("sklearn", "imblearn"):
    try:
      info[name] = __import__(name).__version__
    except ImportError:
      pass
  print()
  result = {"benchmark": "smote", "machine": info, "settings": settings, "rows": rows, "notes": notes}
  bench_common.publish(args.out, result, COLUMNS, "Latent SMOTE: JAX beside imbalanced-learn")
  return rows


COLUMNS = ["op", "n", "d", "impl", "median_s", "speedup", "first_call_s", "extra_rss_mib", "device_peak_mib", "error"]


if __name__ == "__main__":
  main()
