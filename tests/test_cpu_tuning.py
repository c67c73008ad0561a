"""`benchmarks/cpu_tuning.py` at a tiny preset: every part it is run with writes rows the results file reads, and
the rewritten step computes what XLA's does (the speed-up is measured on the same loss)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_layers_code_and_hlo_parts_write_their_rows(tmp_path):
  out = tmp_path / "cpu_tuning.json"
  args = ["--parts", "layers", "code", "hlo", "--presets", "micro_16", "--batch", "2", "--layer-batch", "2"]
  args += ["--layer-repeats", "1", "--layer-rounds", "1", "--rounds", "1", "--repeats", "1", "--torch-repeats", "1"]
  args += ["--code-variants", "xla", "current", "--torch-threads", "1", "--no-machine", "--json", str(out)]
  proc = subprocess.run(
    [sys.executable, str(ROOT / "benchmarks" / "cpu_tuning.py"), *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  d = json.loads(out.read_text())
  assert d["benchmark"] == "cpu_tuning" and d["load_start"] and d["load_end"]
  layers = d["layers"]["rows"]
  assert {r["impl"] for r in layers} >= {"xla", "current"}
  assert all(r["preset"] == "micro_16" and r["fwd_ms"] > 0 for r in layers if r["impl"] in ("xla", "current"))
  impls = {r["impl"] for r in d["code"]["rows"]}
  assert impls == {"jax xla", "jax current", "torch fp32 threads=1"}
  assert all(r["img_per_s"] > 0 for r in d["code"]["rows"])
  samples = d["code"]["samples"]
  loss_xla, loss_current = samples["micro_16|jax xla"][0]["loss"], samples["micro_16|jax current"][0]["loss"]
  assert loss_current == pytest.approx(loss_xla, rel=1e-5)
  assert d["hlo"]["fusion_kinds"] and d["hlo"]["hlo_md5"]
