"""One run per workdir: a live holder stops a second run, a killed run's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from deepsmote_jax.jobs.lock import LOCK_NAME, WorkdirLock, WorkdirLocked


def _fake_lock(workdir, pid, host=None):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / LOCK_NAME).write_text(
    json.dumps(
      {"pid": pid, "host": host or socket.gethostname(), "started": "2026-11-27T00:00:00", "command": "run_pipeline.py"}
    )
  )


def test_second_run_is_refused_naming_the_holder(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _fake_lock(tmp_path, holder.pid)
    with pytest.raises(WorkdirLocked, match=rf"in use by pid {holder.pid} on .* since 2026-11-27T00:00:00"):
      WorkdirLock(tmp_path).acquire()
  finally:
    holder.kill()
    holder.wait()


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  _fake_lock(tmp_path, int(dead.stdout))
  with WorkdirLock(tmp_path):
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
  assert not (tmp_path / LOCK_NAME).exists()  # released at the end
  assert [p.name for p in tmp_path.iterdir()] == []  # no stale copy left


def test_lock_of_another_host_is_respected(tmp_path):
  _fake_lock(tmp_path, 1, host="some-other-machine")
  with pytest.raises(WorkdirLocked, match="some-other-machine"):
    WorkdirLock(tmp_path).acquire()


def test_lock_is_held_only_inside_the_block(tmp_path):
  with WorkdirLock(tmp_path):
    with pytest.raises(WorkdirLocked, match=f"pid {os.getpid()}"):
      WorkdirLock(tmp_path).acquire()
  with WorkdirLock(tmp_path):
    pass


def test_pipeline_and_training_jobs_take_the_lock(tmp_path):
  """A second pipeline (or training job) started into a busy workdir stops at once, before any stage."""
  from test_jobs_pipeline import _write_images, tiny_config

  from deepsmote_jax.jobs.pipeline import run_pipeline
  from deepsmote_jax.jobs.train_autoencoder import train_and_export

  root = _write_images(tmp_path / "images")
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _fake_lock(tmp_path / "work", holder.pid)
    with pytest.raises(WorkdirLocked, match=f"pid {holder.pid}"):
      run_pipeline(tiny_config(root), tmp_path / "work", progress=False)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [LOCK_NAME]  # nothing ran
    _fake_lock(tmp_path / "ae", holder.pid)
    with pytest.raises(WorkdirLocked):
      train_and_export(tiny_config(root), str(tmp_path / "ae"), progress=False)
  finally:
    holder.kill()
    holder.wait()
