"""`<workdir>/run_info.json`: what a pipeline run was started with, written when it starts.

The resolved config, the versions of the packages that computed the numbers, the devices JAX sees, the git
commit of the package (when it is imported from a git checkout) and the start time. It is a record for the
reader only: no stage reads it, so it never enters a stage's record or fingerprint.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import os
import pathlib
import subprocess

import jax

from deepsmote_jax import files

RUN_INFO = "run_info.json"
PACKAGES = ("deepsmote_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
# Reported when installed (under any of these distribution names); never imported here.
OPTIONAL = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "clu": ("clu",)}


def _version(*names: str) -> str | None:
  for name in names:
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return None


def versions() -> dict[str, str | None]:
  """Installed versions (None: not installed); TensorFlow only where it is importable."""
  out = {name: _version(name) for name in PACKAGES}
  for key, dists in OPTIONAL.items():
    if importlib.util.find_spec(key) is not None:
      out[key] = _version(*dists)
  return out


def git_commit(path: str | os.PathLike | None = None) -> str | None:
  """The commit checked out where the package lives, or None (not a git checkout, or no git)."""
  here = pathlib.Path(path or pathlib.Path(__file__).resolve().parents[2])
  if not (here / ".git").exists():
    return None
  try:
    out = subprocess.run(
      ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
    )
  except (OSError, subprocess.SubprocessError):
    return None
  commit = out.stdout.strip()
  return commit if out.returncode == 0 and commit else None


def devices() -> dict:
  devs = jax.devices()
  return {
    "backend": jax.default_backend(),
    "kind": devs[0].device_kind if devs else None,
    "count": len(devs),
    "process_count": jax.process_count(),
  }


def collect(config) -> dict:
  """run_info.json's content for `config` (an ml_collections ConfigDict)."""
  return {
    "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "config": files.json_safe(config.to_dict()),
    "versions": versions(),
    "devices": devices(),
    "git_commit": git_commit(),
  }


def write(config, work: str | os.PathLike) -> pathlib.Path:
  """Writes `<work>/run_info.json` (replacing the one of an earlier start) and returns its path."""
  return files.atomic_write_json(pathlib.Path(work) / RUN_INFO, collect(config))
