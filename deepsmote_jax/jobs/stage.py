"""A pipeline stage: a named function that fills one folder of the workdir, finished by a DONE.json marker.

The marker is written last and atomically, so a folder without it is unfinished (killed, failed) and is
redone from scratch, never built on.
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time
from typing import Any, Callable

from deepsmote_jax import files

DONE = "DONE.json"


@dataclasses.dataclass(frozen=True)
class Stage:
  """`run(out_dir) -> info` fills `<workdir>/<name>`; `inputs` are the stages whose folders it reads."""
  name: str
  run: Callable[[pathlib.Path], dict[str, Any] | None]
  inputs: tuple[str, ...] = ()


def log(msg: str) -> None:
  print(f"[pipeline] {msg}", flush=True)


def is_done(folder: pathlib.Path) -> bool:
  return (folder / DONE).is_file()


def run_stage(out: pathlib.Path, run: Callable[[pathlib.Path], dict[str, Any] | None]) -> dict:
  """Runs `run` in a fresh `out` folder and marks it finished with DONE.json (stage name, wall time, info)."""
  if out.exists():
    shutil.rmtree(out)
  out.mkdir(parents=True)
  t0 = time.perf_counter()
  log(f"stage {out.name}: running")
  info = run(out) or {}
  wall = time.perf_counter() - t0
  files.atomic_write_json(out / DONE, {"stage": out.name, "wall_s": wall, **info})
  log(f"stage {out.name}: done in {wall:.1f} s")
  return info
