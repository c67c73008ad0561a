"""`benchmarks/gpu_check.sh --smoke`: every part of the prepared GPU run, at CPU sizes, on a mirror of the GPU image.

The GPU image has no TensorFlow, no tensorflow-datasets and no imbalanced-learn (ml_collections travels as a
wheel); a `sitecustomize` makes them unimportable here, so a benchmark that grows a dependency on them fails
in CI, not on the day a GPU is lent. Each part's JSON is checked against the schema the summary reads.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from deepsmote_jax.models import presets

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The two device calls of a lent GPU: the default parts, then "f e" at once on the warm machine; the part run
# only on request (d) goes with the second here.
CALLS = {
  "call1": {"a": "autoencoder_step", "b": "paper_run", "c": "smote"},
  "call2": {"d": "classifier_step", "f": "step_profile", "e": "quality_run"},
}
PARTS = CALLS["call1"] | CALLS["call2"]
ROW_KEYS = {
  "a": {"preset", "channels", "batch", "impl"},
  "b": {"run"},
  "c": {"op", "n", "d", "impl"},
  "d": {"model", "batch", "impl"},
  "e": {"method", "acsa", "ng_recall", "ng_recall_at_threshold"},
  "f": {"preset", "dtype", "layer", "fwd_bwd_ms"},
}

# One xdist worker runs this module (`--dist loadgroup`), so its module-scoped fixture is built once.
pytestmark = [
  pytest.mark.slow,
  pytest.mark.xdist_group("gpu_check"),
]


def _mirror_env(tmp_path: pathlib.Path, blocked: list[str]) -> dict[str, str]:
  site = tmp_path / "mirror_site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(
    "import sys\n"
    f"for _name in {blocked!r}:\n"
    "  sys.modules[_name] = None   # `import _name` now raises ImportError, as on the GPU image\n"
  )
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in [env.get("PYTHONPATH")] if p])
  env["OUT"] = str(tmp_path / "out")
  env["TMPDIR"] = str(tmp_path)
  env["PYTHON"] = sys.executable
  env["DEEPSMOTE_JAX_CACHE"] = str(tmp_path / "jax_cache")
  return env


@pytest.fixture(scope="module")
def smoke_calls(tmp_path_factory):
  """Both calls, each with its own output folder: {call: (process, out)}."""
  tmp = tmp_path_factory.mktemp("gpu_check")
  env = _mirror_env(tmp, ["tensorflow", "tensorflow_datasets", "imblearn"])
  runs = {}
  for call, extra in (("call1", []), ("call2", ["--parts", "d f e"])):
    out = tmp / call
    proc = subprocess.run(
      ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", *extra],
      cwd=ROOT,
      env=env | {"OUT": str(out)},
      capture_output=True,
      text=True,
      timeout=900,
    )
    runs[call] = (proc, out)
  return runs


@pytest.fixture(scope="module")
def smoke_run(smoke_calls):
  """The first call's (process, out); the second call's JSONs are read from its own folder by `_part`."""
  return smoke_calls["call1"]


def _part(smoke_calls, part: str) -> dict:
  call = next(c for c, parts in CALLS.items() if part in parts)
  return json.loads((smoke_calls[call][1] / f"{part}_{PARTS[part]}.json").read_text())


def test_mirror_blocks_the_missing_packages(tmp_path):
  env = _mirror_env(tmp_path, ["tensorflow", "imblearn"])
  proc = subprocess.run([sys.executable, "-c", "import imblearn"], env=env, capture_output=True, text=True)
  assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, proc.stderr


@pytest.mark.parametrize("call", list(CALLS))
def test_every_part_ran_and_wrote_its_json(smoke_calls, call):
  proc, out = smoke_calls[call]
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  statuses = {s["part"]: s for s in summary["parts"]}
  assert set(statuses) == set(CALLS[call])
  for key in ("python", "jax", "torch"):  # machine.json, written before the first part
    assert summary["machine"].get(key), key
  for part, name in CALLS[call].items():
    assert statuses[part]["status"] == "ok", (part, statuses[part])
    payload = json.loads((out / f"{part}_{name}.json").read_text())
    assert payload["benchmark"] == name
    for key in ("date_utc", "python", "jax"):
      assert payload["machine"].get(key), (part, key)
    assert payload["rows"], part
    for row in payload["rows"]:
      assert ROW_KEYS[part] <= set(row), (part, row)
  # The summary table is the last thing printed, after every part.
  tail = proc.stdout.strip().splitlines()
  assert tail[-1].startswith("gpu_check: done")
  assert any(line.startswith("part ") and "what" in line for line in tail[-40:])
  assert (out / "summary.md").read_text().count("|") > 10
  assert (out / "gpu_check_files.tar.gz").stat().st_size > 0
  assert len(list(out.iterdir())) <= 8  # the device tool returns at most 8 files


def test_step_profile_sums_device_time_by_kernel(smoke_calls):
  f = _part(smoke_calls, "f")
  (trace,) = f["traces"]
  assert not trace.get("error"), trace
  assert trace["device_ms_per_step"] > 0 and trace["by_kernel"] and trace["by_class"]
  assert sum(r["share"] for r in trace["by_class"]) == pytest.approx(1.0)
  # One row per convolution of the preset (its encoder's and its decoder's), and after each convolution that the
  # model follows with BatchNorm (all but the first encoder and the last decoder layer) two: masked, unmasked.
  spec = presets.get_preset("micro_16")
  norms = [r for r in f["rows"] if "BatchNorm" in r["layer"]]
  assert len(f["rows"]) - len(norms) == len(spec.encoder) + len(spec.decoder)
  assert len(norms) == 2 * (len(spec.encoder) - 1 + len(spec.decoder) - 1)
  assert all(r["fwd_bwd_ms"] > 0 for r in f["rows"]), f["rows"]


def test_project_rows_have_numbers_and_memory(smoke_run):
  _, out = smoke_run
  a = json.loads((out / "a_autoencoder_step.json").read_text())["rows"]
  jax_rows = [r for r in a if r["impl"].startswith("jax")]
  assert {r["impl"] for r in jax_rows} == {"jax bfloat16", "jax float32", "jax bfloat16+f32edges"}
  for r in jax_rows:
    assert not r.get("error"), r
    assert r["img_per_s"] > 0 and r["peak_mib"] > 0 and r["loss_finite"]
  torch_rows = [r for r in a if r["impl"].startswith("torch")]
  assert {r["impl"] for r in torch_rows} == {"torch fp32", "torch bf16_cl"}
  assert all(r.get("img_per_s", 0) > 0 for r in torch_rows), torch_rows  # the CPU PyTorch baseline runs in CI
  b = {r["run"]: r for r in json.loads((out / "b_paper_run.json").read_text())["rows"]}
  assert set(b) == {"cold cache", "warm cache"}
  for r in b.values():
    assert not r.get("error"), r
    assert 0 < r["steps_s"] < r["job_wall_s"]
    assert r["dtype"] == "float32"  # 'auto' on the CPU; the row names the dtype it ran
  assert b["cold cache"]["final_loss"] == pytest.approx(b["warm cache"]["final_loss"], rel=1e-6)


def test_missing_baselines_are_skipped_with_one_line(smoke_run, smoke_calls):
  _, out = smoke_run
  c = json.loads((out / "c_smote.json").read_text())
  assert any("imbalanced-learn not installed" in n for n in c["notes"])
  assert not [r for r in c["rows"] if r["impl"].startswith("imblearn")]
  assert [r for r in c["rows"] if r["impl"].startswith("sklearn")]  # scikit-learn is on the GPU image
  assert all(r["median_s"] > 0 for r in c["rows"] if r["impl"].startswith("deepsmote"))
  # The tile sweep (smoke: 64 and 32x128 at n = 1,000) picks the fastest, which the sizes from there on use;
  # from --once-from on, one timed resample call and no k-NN row.
  sweep = {r["tiles"]: r["median_s"] for r in c["rows"] if r["op"] == "knn_tiles"}
  assert set(sweep) == {"64", "32x128"} and c["settings"]["tiles_from_sweep_n"] == min(sweep, key=sweep.get)
  large = [r for r in c["rows"] if r["impl"].startswith("deepsmote") and r["n"] == 1000 and r["op"] != "knn_tiles"]
  assert [r["op"] for r in large] == ["resample"] and large[0]["timed"] == "one call, compile included"
  assert large[0]["tiles"] == c["settings"]["tiles_from_sweep_n"]
  d = _part(smoke_calls, "d")["rows"]
  assert [r for r in d if r["impl"].startswith("jax")] and all(r["img_per_s"] > 0 for r in d)


def test_torchvision_baseline_without_torchvision_is_an_error_row(tmp_path):
  pytest.importorskip("torch")
  env = _mirror_env(tmp_path, ["torchvision"])
  code = (
    "from benchmarks import torch_classifier as t; import json; "
    "print(json.dumps(t.time_torch_classifier('resnet50', 2, image_size=32, steps=1, warmup=0)))"
  )
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  row = json.loads(proc.stdout.strip().splitlines()[-1])
  assert "torchvision" in row["error"] and "img_per_s" not in row


def test_quality_part_reports_methods(smoke_calls):
  e = _part(smoke_calls, "e")
  assert {r["method"] for r in e["rows"]} == {"none", "deepsmote_reference"}
  assert e["settings"]["autoencoder_epochs"] >= 1 and e["settings"]["seeds"]


def test_a_part_without_its_dependency_fails_alone_and_says_why(tmp_path):
  env = _mirror_env(tmp_path, ["tensorflow", "tensorflow_datasets", "imblearn", "ml_collections"])
  proc = subprocess.run(
    ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--parts", "e"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  e = json.loads((tmp_path / "out" / "e_quality_run.json").read_text())
  assert e["status"] == "failed" and e["rows"] == []
  assert any("ml_collections is not importable" in line for line in e["log_tail"])


def test_bad_arguments_exit_2():
  for args in (["--nope"], ["--parts", "x"], ["--parts"]):
    proc = subprocess.run(
      ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error:"), (args, proc.stderr)
