"""Several processes: 2 CPU processes (one device each, Gloo collectives, coordinator on localhost) train to
the same parameters as 1 process with 2 devices, in memory and streamed from files (each process reading its
own rows), resume across them exactly, and bad setups fail in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# One worker: trains micro_16 uninterrupted in <out>/full, then stopped after 2 steps and resumed in
# <out>/resumed; saves the parameters of both runs (and of the partial one) as <out>/params_<pid>.npz.
WORKER = textwrap.dedent("""
    import sys, json, pathlib
    import numpy as np
    from deepsmote_jax.train import distributed
    out, port, n, pid = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if n > 1:
      assert distributed.initialize(f"127.0.0.1:{port}", n, pid, timeout_s=60)
    import jax
    from deepsmote_jax.models.autoencoder import build_autoencoder
    from deepsmote_jax.models.presets import AutoencoderSpec, ConvSpec
    from deepsmote_jax.train import autoencoder as ae
    assert len(jax.devices()) == 2 and jax.process_count() == n, (jax.devices(), jax.process_count())
    spec = AutoencoderSpec(name="micro_16", image_size=16, channels=1, latent_dim=8,
        encoder=(ConvSpec(4, 4, 2, 1), ConvSpec(8, 4, 2, 1)), decoder_input=(4, 4, 8),
        decoder=(ConvSpec(4, 4, 2, 1), ConvSpec(1, 4, 2, 1)))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (22, 16, 16, 1)).astype(np.uint8)
    labels = (np.arange(22) % 3).astype(np.int32)
    val = (images[:6], labels[:6])
    cfg = ae.AETrainConfig(epochs=2, batch_size=8, steps_per_call=2, penalty_sample_size=6, compute_dtype="float32")

    def train(workdir, **kw):
      model = build_autoencoder(spec, seed=0)
      r = ae.train_autoencoder(model, images, labels, cfg, val=val, workdir=str(out / workdir), progress=False,
                               checkpoint_every_steps=2, **kw)
      return r.summary, {k: np.asarray(v) for k, v in
                         zip(map(jax.tree_util.keystr, [p for p, _ in jax.tree_util.tree_leaves_with_path(
                             (r.state.params, r.state.batch_stats))]),
                             jax.tree.leaves(jax.device_get((r.state.params, r.state.batch_stats))))}

    import time
    t = time.perf_counter()
    full_summary, full = train("full")
    print("full", time.perf_counter() - t, file=sys.stderr, flush=True)
    part_summary, _ = train("resumed", stop_after_steps=2)
    print("part", time.perf_counter() - t, file=sys.stderr, flush=True)
    res_summary, resumed = train("resumed", resume=True)
    print("resumed", time.perf_counter() - t, file=sys.stderr, flush=True)
    # Streamed from PNG files: each process decodes only its own devices' rows of every batch.
    from PIL import Image
    from deepsmote_jax.data.file_images import FileImages
    png = out / f"png_{pid}"
    png.mkdir(exist_ok=True)
    for i, img in enumerate(images):
      Image.fromarray(img[..., 0]).save(png / f"{i:03d}.png")
    source = FileImages([f"{i:03d}.png" for i in range(len(images))], root=png, image_size=16, channels=1)
    r = ae.train_autoencoder(build_autoencoder(spec, seed=0), source, labels, cfg, progress=False)
    streamed = {jax.tree_util.keystr(p): np.asarray(v) for p, v in
                jax.tree_util.tree_leaves_with_path(jax.device_get((r.state.params, r.state.batch_stats)))}
    np.savez(out / f"params_{pid}.npz", **{"full" + k: v for k, v in full.items()},
             **{"resumed" + k: v for k, v in resumed.items()}, **{"streamed" + k: v for k, v in streamed.items()})
    (out / f"summary_{pid}.json").write_text(json.dumps(
        {"full": full_summary, "part": part_summary, "resumed": res_summary}, default=str))
    print("OK", pid, full_summary["final_step"], flush=True)
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
  if "DEEPSMOTE_TEST_XLA_CACHE" in env:  # the test session's compilation cache (conftest): the three runs of a
    env["JAX_COMPILATION_CACHE_DIR"] = env["DEEPSMOTE_TEST_XLA_CACHE"]  # worker compile once
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
  return env


def _start(out, port: int, n: int, pid: int, devices: int) -> subprocess.Popen:
  out.mkdir(parents=True, exist_ok=True)
  cmd = [sys.executable, "-c", WORKER, str(out), str(port), str(n), str(pid)]
  return subprocess.Popen(cmd, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout: float = 600) -> None:
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=timeout))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (stdout, stderr) in zip(procs, outputs):
    assert p.returncode == 0 and "OK" in stdout, stdout[-2000:] + stderr[-4000:]


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_two_devices_and_resume_exactly(tmp_path):
  port = _free_port()
  single = [_start(tmp_path / "single", port, 1, 0, devices=2)]
  multi = [_start(tmp_path / "multi", port, 2, pid, devices=1) for pid in (0, 1)]
  _finish(single + multi)

  one = np.load(tmp_path / "single" / "params_0.npz")
  two = [np.load(tmp_path / "multi" / f"params_{pid}.npz") for pid in (0, 1)]
  names = [k for k in one.files if k.startswith("full")]
  assert names and set(one.files) == set(two[0].files) == set(two[1].files)
  # Both processes end with the same (replicated) parameters, the uninterrupted run's.
  for k in one.files:
    np.testing.assert_array_equal(two[0][k], two[1][k], err_msg=k)
  # The same 2-device step, its all-reduce over Gloo between processes instead of within one.
  worst = max(float(np.max(np.abs(one[k] - two[0][k]))) for k in names)
  print("max |2 processes - 2 devices| =", worst)
  for k in names:
    np.testing.assert_allclose(two[0][k], one[k], rtol=0, atol=1e-6, err_msg=k)
  # Streamed, each process reading only its own rows: the 1-process 2-device streamed run.
  streamed = [k for k in one.files if k.startswith("streamed")]
  assert len(streamed) == len(names)
  for k in streamed:
    np.testing.assert_allclose(two[0][k], one[k], rtol=0, atol=1e-6, err_msg=k)
  # Stopped after 2 steps and resumed from the Orbax checkpoint: the uninterrupted run, exactly.
  for k in names:
    np.testing.assert_array_equal(two[0]["resumed" + k[len("full") :]], two[0][k], err_msg=k)

  work = tmp_path / "multi"
  # Only process 0 wrote files besides the shared checkpoints (metrics.jsonl, best_val.npz).
  assert (work / "full" / "metrics.jsonl").is_file() and (work / "full" / "best_val.npz").is_file()
  steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (work / "resumed" / "metrics.jsonl").open()]
  assert steps == sorted(steps) and steps[-1] == 6, steps
  assert sorted(p.name for p in (work / "full" / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4", "6"]


def _deepsmote(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "deepsmote_jax.cli", "summary", "--config", "default", *args]
  return subprocess.run(cmd, env=_env(1), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
  "args, message",
  [
    (["--num_processes=2"], "error: --num_processes needs --process_id too"),
    (["--process_id=1"], "error: --process_id needs --num_processes too"),
    (["--num_processes=2", "--process_id=2", "--coordinator_address=127.0.0.1:1234"], "outside [0, 2)"),
    (["--num_processes=2", "--process_id=0"], "need --coordinator_address HOST:PORT"),
    (["--num_processes=2", "--process_id=1", "--coordinator_address=nohost"], "expected HOST:PORT"),
  ],
)
def test_bad_distributed_flags_are_one_line_errors(args, message):
  from deepsmote_jax.train import distributed

  kw = {}
  for a in args:
    name, value = a[2:].split("=")
    kw[name] = value if name == "coordinator_address" else int(value)
  with pytest.raises(ValueError, match=message.removeprefix("error: ").replace("[", r"\[").replace(")", r"\)")):
    distributed.initialize(**kw)


def test_unreachable_coordinator_is_an_error_within_the_timeout_not_a_hang():
  port = _free_port()  # nothing listens there
  proc = _deepsmote(
    "--num_processes=2", "--process_id=1", f"--coordinator_address=127.0.0.1:{port}", "--coordinator_timeout_s=2"
  )
  assert proc.returncode == 2, proc.stdout + proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, lines
  assert lines[0].startswith(f"error: the coordinator 127.0.0.1:{port} was not reachable within 2 s"), lines


def test_cli_flag_errors_and_help():
  proc = _deepsmote("--num_processes=2")
  assert proc.returncode == 2 and proc.stderr.strip() == (
    "error: --num_processes needs --process_id too (each process gets its own --process_id in [0, num_processes))"
  )
  from deepsmote_jax import cli

  for name, cmd in cli.COMMANDS.items():
    text = cli.command_help(cmd)
    for flag in ("--coordinator_address", "--num_processes", "--process_id", "--[no]distributed"):
      assert flag in text, (name, flag)


PIPELINE_CONFIG = """
import sys
sys.path.insert(0, {repo!r})
from tests.test_jobs_pipeline import tiny_config

def get_config(arg=None):
  c = tiny_config({root!r})
  c.data.stream = "true"
  c.pipeline.methods = ("random_oversampling", "deepsmote")
  return c
"""


@pytest.mark.slow
def test_two_processes_run_the_whole_streamed_pipeline_as_one_process(tmp_path):
  """`deepsmote pipeline` on 2 processes sharing one workdir (stage decisions by process 0, markers written by
  it, barriers around stages; every process streaming its own rows) ends with the predictions of 1 process with
  2 devices."""
  from tests.test_jobs_pipeline import _write_images

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = tmp_path / "tiny.py"
  config.write_text(PIPELINE_CONFIG.format(repo=repo, root=str(_write_images(tmp_path / "images"))))
  port = _free_port()
  base = [sys.executable, "-m", "deepsmote_jax.cli", "pipeline", "--config", str(config), "--noprogress"]
  multi = ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2"]
  procs = [
    subprocess.Popen(
      [*base, "--workdir", str(tmp_path / "single")],
      env=_env(2),
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
    )
  ]
  procs += [
    subprocess.Popen(
      [*base, "--workdir", str(tmp_path / "multi"), *multi, "--process_id", str(pid)],
      env=_env(1),
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
    )
    for pid in (0, 1)
  ]
  outputs = [p.communicate(timeout=1200) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, out[-2000:] + err[-3000:]
  runs = sorted(p.parent.name for p in (tmp_path / "single" / "classifiers").glob("*/predictions.npz"))
  assert len(runs) == 2
  for run in runs:
    one, two = (
      np.load(tmp_path / w / "classifiers" / run / "predictions.npz")["test_proba"] for w in ("single", "multi")
    )
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-6, err_msg=run)
  assert (tmp_path / "multi" / "report" / "DONE.json").is_file()
  with np.load(tmp_path / "multi" / "data" / "train.npz", allow_pickle=True) as z:
    assert "paths" in z and "images" not in z  # streamed: the split lists files
