"""Writing results: JSON-safe values and atomic writes (a file is complete or absent, never half-written).

Every stage marker, summary, report and manifest goes through here, so a run killed mid-write never leaves
a file that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
  """Plain JSON types: NumPy scalars and arrays unwrapped, non-finite floats as None, tuples as lists,
  anything else (a path, a dtype) as its string."""
  if value is None or isinstance(value, (str, bool, int)):
    return value
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  if isinstance(value, np.ndarray):
    return json_safe(value.tolist())
  if isinstance(value, Mapping):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return str(value)


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """Writes `text` to a temporary file beside `path`, then renames it over `path`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    tmp.write_text(text)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
  return path


def atomic_write_json(path: str | os.PathLike, payload: Any, *, indent: int = 2) -> pathlib.Path:
  """`payload` made JSON-safe and written atomically (strict JSON: no NaN)."""
  return atomic_write_text(path, json.dumps(json_safe(payload), indent=indent, allow_nan=False) + "\n")


def temp_dir_beside(target: str | os.PathLike) -> pathlib.Path:
  """A new empty folder next to `target`, to be renamed over it when complete.

  Named `.<name>.tmp-<pid>-<random>`; folders of that pattern left by processes that no longer exist (a
  killed run) are removed first, so no temporary folder survives a rerun.
  """
  target = pathlib.Path(target).absolute()
  target.parent.mkdir(parents=True, exist_ok=True)
  prefix = f".{target.name}.tmp-"
  for old in target.parent.glob(prefix + "*"):
    pid = old.name[len(prefix) :].split("-", 1)[0]
    if pid.isdigit() and not process_alive(int(pid)):
      shutil.rmtree(old, ignore_errors=True)
  return pathlib.Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=target.parent))


def process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True
