"""DeepSMOTE generation at scale: peak host memory and wall time of encode -> SMOTE -> decode/write per N.

One class 'a' of N images (plus a class 'b' of 16, which is not sampled) is over-sampled to 2N
(`sampling_strategy={'a': 2N}`: N synthetic rows) by `jobs.generate.generate_dataset` with the `tiny_64`
preset (64x64x1, latent 32, random weights, batch 256, k = 5, copy_originals='none'). Each row runs in a
fresh subprocess and reports the process's RSS high-water (`resource.getrusage(...).ru_maxrss`), the RSS
just before the measured work (after imports, the model and a small warm-up run that imports TensorFlow
and compiles everything), and the stage times of the summary.

Rows ('mode'):
  files     end to end from a streamed `ImageSet` (`FileImages`): the N images are decoded from PNG files
            in batches (Pillow, a thread pool; the list cycles through `--distinct` files written once, so the
            disk stays small; every image is still read and decoded), every synthetic image decoded and written as PNG.
  imageset  the same from an in-memory `ImageSet` (N x 64 x 64 bytes held by the caller), for contrast.
  codes     the largest N, by parts: the codes are synthesised (N(0, 1), no encoding); the class's k-NN +
            draw is compiled for N and XLA's memory accounting reported but NOT run (exact all-pairs k-NN
            of 10^6 codes is ~10^12 distance evaluations, hours on 2 CPU cores; its time is projected
            from the files rows); the SMOTE draw runs (`smote.smote_samples` with a random neighbour
            table); the first --decode-cap synthetic codes are decoded and written by `generate`'s own
            `_write_synthetic` (chunked decode, PNGs as they come, grids).

Example:
  python benchmarks/generation_scale.py                       # 10k, 100k files; 100k imageset; 1M codes
  python benchmarks/generation_scale.py --files 10000 --codes 0 --out /tmp/g.json
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
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common as bench_common  # noqa: E402

PRESET = "tiny_64"
MINOR = 16  # images of the class that is not sampled
COLUMNS = (
  "mode",
  "n",
  "synthetic",
  "pngs_written",
  "codes_mib",
  "images_mib",
  "rss_before_mib",
  "peak_rss_mib",
  "extra_mib",
  "encode_s",
  "resample_s",
  "decode_write_s",
  "total_s",
  "xla_knn_draw_mib",
)


def _rss_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _write_distinct(root: pathlib.Path, distinct: int) -> list[str]:
  """`distinct` random 64x64 gray PNGs under root/a and MINOR under root/b; returns the 'a' names."""
  from deepsmote_jax.data.folder import save_image_folder

  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (distinct + MINOR, 8, 8, 1)).astype(np.uint8)
  images = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)  # blocky, so the PNGs stay small
  labels = np.repeat([0, 1], [distinct, MINOR])
  rels = save_image_folder(images, labels, ["a", "b"], root)
  return [r for r in rels if r.startswith("a" + os.sep)]


def _image_files(root: pathlib.Path, names: list[str], n: int):
  from deepsmote_jax.data.file_images import FileImages
  from deepsmote_jax.data.folder import ImageSet

  b_names = sorted(os.path.join("b", f) for f in os.listdir(root / "b"))
  files = [names[i % len(names)] for i in range(n)] + b_names
  images = FileImages(files, root=root, image_size=64, channels=1)
  return ImageSet(images=images, labels=np.repeat([0, 1], [n, len(b_names)]), class_names=["a", "b"], files=files)


def _as_image_set(source):
  from deepsmote_jax.data.folder import load_image_folder

  full = load_image_folder(source.images.root, image_size=64, channels=1)
  index = {f: i for i, f in enumerate(full.files)}
  return full.subset([index[f] for f in source.files])


def _xla_mib(n: int, d: int) -> float:
  """arguments + outputs + temporaries of one class's compiled k-NN + draw (not run)."""
  import jax
  import jax.numpy as jnp

  from deepsmote_jax import smote

  x = jax.ShapeDtypeStruct((n, d), jnp.float32)
  static = dict(n_samples=smote._draw_size(n), k=5, block_size=1024, precision=jax.lax.Precision.HIGHEST)
  m = smote._smote_class.lower(jax.random.key(0), x, None, **static).compile().memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes) / 2**20


def _generate_row(mode: str, n: int, model, root, names, work: pathlib.Path) -> dict:
  from deepsmote_jax.jobs import generate

  source = _image_files(root, names, n)
  if mode == "imageset":
    source = _as_image_set(source)
  before = _rss_mib()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    summary = generate.generate_dataset(
      model, source, work / f"out_{n}", sampling_strategy={"a": 2 * n}, copy_originals="none", seed=0
    )
  s = summary["seconds"]
  pngs = sum(1 for _ in os.scandir(work / f"out_{n}" / "a"))
  return dict(
    synthetic=summary["counts_new"]["a"],
    pngs_written=pngs,
    rss_before_mib=before,
    encode_s=s["encode"],
    resample_s=s["resample"],
    decode_write_s=s["decode_write"],
    total_s=s["total"],
  )


def _codes_row(n: int, model, root, names, work: pathlib.Path, cap: int) -> dict:
  import jax

  from deepsmote_jax import smote
  from deepsmote_jax.jobs import generate

  d = model.spec.latent_dim
  source = _image_files(root, names, n)
  before = _rss_mib()
  t0 = time.perf_counter()
  codes = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
  nn = np.random.default_rng(1).integers(0, n, (n, 5)).astype(np.int32)  # stands in for the k-NN's table
  draw = smote.smote_samples(jax.random.key(0), codes, n, nn_indices=nn)
  jax.block_until_ready(draw.samples)
  t1 = time.perf_counter()
  first = smote.Resampled(
    draw.samples[:cap],
    np.full(cap, "a"),
    np.asarray(draw.base[:cap], np.int64),
    np.asarray(draw.neighbor[:cap], np.int64),
    np.asarray(draw.gap[:cap]),
    targets={"a": n},
    k_used={"a": 5},
    danger={},
  )
  out = work / "codes_out"
  (out / "a").mkdir(parents=True)
  paths = [os.path.join("a", generate.synthetic_name("a", i + 1, 7)) for i in range(cap)]
  generate._write_synthetic(out, model, source, first, paths, 256)
  t2 = time.perf_counter()
  return dict(
    synthetic=n,
    pngs_written=sum(1 for _ in os.scandir(out / "a")),
    rss_before_mib=before,
    resample_s=t1 - t0,
    decode_write_s=t2 - t1,
    total_s=t2 - t0,
    xla_knn_draw_mib=_xla_mib(n, d),
  )


def child(mode: str, n: int, distinct: int, cap: int) -> dict:
  from deepsmote_jax.jobs import generate
  from deepsmote_jax.models import presets
  from deepsmote_jax.models.autoencoder import build_autoencoder

  model = build_autoencoder(presets.get_preset(PRESET), seed=0)
  with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
    work = pathlib.Path(tmp)
    root = work / "data"
    names = _write_distinct(root, distinct)
    with warnings.catch_warnings():  # warm-up: TensorFlow imported, every shape compiled, not measured
      warnings.simplefilter("ignore")
      generate.generate_dataset(
        model, _image_files(root, names, 300), work / "warm", sampling_strategy={"a": 600}, copy_originals="none"
      )
    if mode == "codes":
      row = _codes_row(n, model, root, names, work, cap)
    else:
      row = _generate_row(mode, n, model, root, names, work)
  d = model.spec.latent_dim
  return dict(
    mode=mode,
    n=n,
    codes_mib=n * d * 4 / 2**20,
    images_mib=n * 64 * 64 / 2**20,
    peak_rss_mib=_maxrss_mib(),
    extra_mib=_maxrss_mib() - row["rss_before_mib"],
    **row,
  )


def run_child(mode: str, n: int, args) -> dict:
  cmd = [sys.executable, __file__, "--child", mode, str(n), "--distinct", str(args.distinct)]
  cmd += ["--decode-cap", str(args.decode_cap)]
  print(f"{mode} n={n:,} ...", flush=True)
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s, check=False)
  if proc.returncode:
    return {"mode": mode, "n": n, "error": bench_common.error_message(RuntimeError(proc.stderr[-2000:]))}
  row = json.loads(proc.stdout.strip().splitlines()[-1])
  print(bench_common.format_table([row], COLUMNS), flush=True)
  return row


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--files", type=int, nargs="*", default=[10_000, 100_000])
  p.add_argument("--imageset", type=int, nargs="*", default=[100_000])
  p.add_argument("--codes", type=int, nargs="*", default=[1_000_000])
  p.add_argument("--distinct", type=int, default=10_000, help="distinct PNG files the lists cycle through")
  p.add_argument("--decode-cap", type=int, default=2_000, help="synthetic images decoded in the codes rows")
  p.add_argument("--timeout-s", type=float, default=1800)
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generation_scale_cpu.json"))
  p.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(child(args.child[0], int(args.child[1]), args.distinct, args.decode_cap)))
    return
  jobs = [("files", n) for n in args.files] + [("imageset", n) for n in args.imageset]
  rows = [run_child(mode, n, args) for mode, n in jobs + [("codes", n) for n in args.codes if n]]
  settings = dict(preset=PRESET, latent_dim=32, batch_size=256, k_neighbors=5, distinct_files=args.distinct)
  settings["decode_cap_codes_rows"] = args.decode_cap
  payload = {"machine": bench_common.machine_info(), "settings": settings, "rows": rows, "notes": []}
  bench_common.publish(args.out, payload, COLUMNS, "DeepSMOTE generation at scale: peak host memory and time per N")


if __name__ == "__main__":
  main()
