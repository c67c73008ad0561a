"""JSON-safe values and atomic writes."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

from deepsmote_jax import files


def test_json_safe_plain_types():
  value = {
    "a": np.float32(1.5),
    "b": np.int64(3),
    "c": np.array([1, 2]),
    "d": (math.nan, math.inf),
    1: None,
    "e": np.bool_(True),
    "p": pathlib.Path("x/y"),
  }
  out = files.json_safe(value)
  assert out == {"a": 1.5, "b": 3, "c": [1, 2], "d": [None, None], "1": None, "e": True, "p": "x/y"}
  json.dumps(out, allow_nan=False)


def test_atomic_write_leaves_only_the_file(tmp_path):
  path = files.atomic_write_json(tmp_path / "sub" / "x.json", {"v": math.nan})
  assert json.loads(path.read_text()) == {"v": None}
  assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
  path = files.atomic_write_text(tmp_path / "x.txt", "old")

  def fail(*_):
    raise OSError("disk full")

  monkeypatch.setattr(files.os, "replace", fail)
  with pytest.raises(OSError):
    files.atomic_write_text(path, "new")
  assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_temp_dirs_of_dead_processes_are_removed(tmp_path):
  import subprocess
  import sys

  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  stale = tmp_path / f".out.tmp-{int(dead.stdout)}-abc"
  stale.mkdir()
  (stale / "half.png").write_text("x")
  live = tmp_path / f".out.tmp-{__import__('os').getpid()}-xyz"  # this process: still running, kept
  live.mkdir()
  new = files.temp_dir_beside(tmp_path / "out")
  assert new.is_dir() and not stale.exists() and live.exists()
