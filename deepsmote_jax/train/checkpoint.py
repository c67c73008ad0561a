"""Orbax checkpoints of the train state and exported models.

Train-state checkpoints are asynchronous, keep the last N and are written atomically by Orbax (a
checkpoint directory is complete or absent; unfinished temporary directories are ignored on restore).
Trees are stored as plain nested dicts with string keys so they are readable without this package.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def to_saveable(tree) -> Any:
  """Any pytree of arrays -> nested dicts with string keys (Orbax-friendly, stable across versions)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  out: dict = {}
  for path, leaf in flat:
    node = out
    keys = [_key_str(k) for k in path]
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1] if keys else "value"] = leaf
  return out


def _key_str(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def from_saveable(saved: dict, like):
  """Inverse of `to_saveable` given a tree `like` with the target structure."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(like)
  leaves = []
  for path, _ in flat:
    node = saved
    keys = [_key_str(k) for k in path] or ["value"]
    for k in keys:
      node = node[k]
    leaves.append(node)
  return jax.tree_util.tree_unflatten(treedef, leaves)


class CheckpointManager:
  """Periodic asynchronous train-state checkpoints under `<workdir>/checkpoints`, keeping the last N."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, *, metadata: dict | None = None, force: bool = False) -> None:
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(to_saveable(state)),
                                                     metadata=ocp.args.JsonSave(metadata or {})), force=force)

  def restore(self, state_like, step: int | None = None):
    """Restores into the structure (and shardings) of `state_like`; returns (state, metadata)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint to resume from in {self.directory}")
    target = to_saveable(jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like))
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), metadata=ocp.args.JsonRestore()))
    return from_saveable(restored["state"], state_like), restored.get("metadata")

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def save_tree(path: str | os.PathLike, tree, *, meta: dict) -> pathlib.Path:
  """Writes `tree` (arrays) and `meta` (JSON) to the directory `path` atomically (tmp dir + rename)."""
  path = pathlib.Path(path).absolute()
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
  try:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(tmp / "arrays", jax.device_get(to_saveable(tree)))
      ckptr.wait_until_finished()
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if path.exists():
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def load_tree(path: str | os.PathLike, like=None):
  """Reads a directory written by `save_tree`; returns (tree, meta). With `like`, restores its structure."""
  path = pathlib.Path(path).absolute()
  meta_file = path / "meta.json"
  if not meta_file.is_file():
    raise FileNotFoundError(f"{path} is not an exported model directory (no meta.json)")
  meta = json.loads(meta_file.read_text())
  with ocp.StandardCheckpointer() as ckptr:
    if like is not None:
      target = to_saveable(jax.tree.map(lambda x: np.zeros(np.shape(x), getattr(x, "dtype", None) or np.asarray(x).dtype), like))
      saved = ckptr.restore(path / "arrays", target)
      return from_saveable(saved, like), meta
    return ckptr.restore(path / "arrays"), meta
