"""A pipeline stage: a named function that fills one folder of the workdir, and the record of what built it.

Each stage's record holds the config settings it reads, a fingerprint of its own inputs (the data stage:
the image files) and the digests of the records of the stages it reads. `STARTED.json` is written when a
stage starts and `DONE.json` (record, wall time, info) last and atomically, so:
* a folder without DONE.json is unfinished (killed, failed): a resumable stage whose STARTED record still
  matches continues from what it saved (checkpoints); any other is redone from scratch;
* a finished stage is reused only while its record equals the current one; otherwise it and every stage
  after it are redone, and the differences are said;
* a stage made of independent parts (the classifier runs, `keeps_parts`) is never cleared: each part has its
  own record, with the ids of the finished stages it read (new at each run of a stage), and a part is kept
  only while that record is unchanged: never across a rerun of a stage it reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil
import time
import uuid
from collections.abc import Callable
from typing import Any

from deepsmote_jax import files
from deepsmote_jax.train import distributed

DONE = "DONE.json"
STARTED = "STARTED.json"


@dataclasses.dataclass(frozen=True)
class Stage:
  """`run(out_dir, resume) -> info` fills `<workdir>/<name>`.

  `inputs`: the stages whose folders it reads; `settings`: the config keys (sections or dotted keys) its
  result depends on; `resumable`: it can continue an unfinished folder (resume=True) instead of restarting;
  `keeps_parts`: its folder is never cleared (always resume=True): it checks each part it made earlier against
  that part's own record and redoes only the parts that changed.
  """

  name: str
  run: Callable[[pathlib.Path, bool], dict[str, Any] | None]
  inputs: tuple[str, ...] = ()
  settings: tuple[str, ...] = ()
  resumable: bool = False
  keeps_parts: bool = False


def log(msg: str) -> None:
  print(f"[pipeline] {msg}", flush=True)


def setting(config, key: str):
  """`config`'s value at a section or dotted key ('data', 'pipeline.positive_class'), as plain data."""
  node = config
  for part in key.split("."):
    node = node[part]
  return node.to_dict() if hasattr(node, "to_dict") else node


def digest(record: dict) -> str:
  return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_done(folder: pathlib.Path) -> bool:
  return (folder / DONE).is_file()


def read_record(folder: pathlib.Path, marker: str = DONE) -> dict | None:
  """The record a marker holds (None if absent or unreadable)."""
  marked = read_json(folder / marker)
  return marked.get("record") if isinstance(marked, dict) else None


def made_id(folder: pathlib.Path) -> str | None:
  """The id a finished stage's DONE.json holds: new each time the stage is run, kept while it is reused (None
  for a folder not finished, or finished before ids were written)."""
  done = read_json(folder / DONE)
  return done.get("id") if isinstance(done, dict) else None


def read_json(path: pathlib.Path):
  """A JSON file's content, None if absent or unreadable (a file cut short by a kill reads as absent)."""
  try:
    return json.loads(pathlib.Path(path).read_text())
  except (OSError, ValueError):
    return None


def run_stage(
  out: pathlib.Path,
  run: Callable[[pathlib.Path, bool], dict[str, Any] | None],
  record: dict | None = None,
  *,
  resume: bool = False,
) -> dict:
  """Runs `run` in `out` (a fresh folder unless `resume`) and marks it finished with DONE.json.

  With several processes every one runs the stage (training is collective); process 0 alone prepares the
  folder and writes the markers, and all wait for each other before and after, so no process reads a
  folder another is still clearing or filling.
  """
  primary = distributed.is_primary()
  if primary:
    if out.exists() and not resume:
      shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DONE).unlink(missing_ok=True)
    files.atomic_write_json(out / STARTED, {"stage": out.name, "record": record})
  distributed.barrier(f"stage {out.name}: start")
  t0 = time.perf_counter()
  log(f"stage {out.name}: {'resuming' if resume else 'running'}")
  info = run(out, resume) or {}
  wall = time.perf_counter() - t0
  distributed.barrier(f"stage {out.name}: end")
  if primary:
    done = {"stage": out.name, "id": uuid.uuid4().hex, "wall_s": wall, "record": record, **info}
    files.atomic_write_json(out / DONE, done)
  log(f"stage {out.name}: done in {wall:.1f} s")
  return info
