"""One run per workdir: a lock file naming its holder; a lock left by a killed run is detected and taken over.

The lock is `<workdir>/.lock` (JSON: pid, host, start time, command), created with O_EXCL so two runs
cannot both get it. A lock whose process is gone on this host is stale: it is moved aside atomically (only
one of several runs can win that rename) and the run takes it. A lock held by a live process, or by
another host (whose processes cannot be checked from here), stops the run with a message naming it.
With several processes (hosts) in one run, process 0 holds the lock for all of them.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import socket
import sys

from deepsmote_jax import files
from deepsmote_jax.train import distributed

LOCK_NAME = ".lock"


class WorkdirLocked(RuntimeError):
  """Another run holds the workdir."""


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds the workdir for the duration of the block."""

  def __init__(self, workdir: str | os.PathLike):
    self.path = pathlib.Path(workdir) / LOCK_NAME
    self.held = False

  def _holder(self) -> dict:
    try:
      return json.loads(self.path.read_text())
    except (OSError, ValueError):
      return {}

  def _try_create(self) -> bool:
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    info = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "started": datetime.datetime.now().isoformat(timespec="seconds"),
      "command": " ".join(sys.argv)[:300],
    }
    with os.fdopen(fd, "w") as f:
      f.write(json.dumps(info))
    return True

  def acquire(self) -> WorkdirLock:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if not distributed.is_primary():  # one run of several processes: process 0 holds the lock
      return self
    for _ in range(3):
      if self._try_create():
        self.held = True
        return self
      holder = self._holder()
      same_host = holder.get("host") == socket.gethostname()
      if holder and (not same_host or files.process_alive(int(holder.get("pid", -1)))):
        where = f"pid {holder.get('pid')} on {holder.get('host')}"
        raise WorkdirLocked(
          f"workdir {self.path.parent} is in use by {where} since {holder.get('started')} "
          f"({holder.get('command', '?')}); wait for it, or remove {self.path} if that run is gone"
        )
      stale = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
      try:
        os.rename(self.path, stale)  # atomic: of several runs taking over, one wins
        stale.unlink()
      except FileNotFoundError:
        pass
    raise WorkdirLocked(f"could not lock {self.path.parent}: another run keeps taking it")

  def release(self) -> None:
    if self.held:
      if self._holder().get("pid") == os.getpid():
        self.path.unlink(missing_ok=True)
      self.held = False

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
