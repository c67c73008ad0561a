"""Orbax checkpoints of the train state and exported models.

Train-state checkpoints are asynchronous, keep the last N and are written atomically by Orbax (a
checkpoint directory is complete or absent; unfinished temporary directories are ignored on restore).
Trees are stored as plain nested dicts with string keys so they are readable without this package.

With several processes, train-state checkpoints are saved and restored by all of them together (Orbax's
multi-host protocol: the primary writes the metadata, each array is written once); exported models are
written by process 0 alone (the others wait for it) and read by each process on its own.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from deepsmote_jax import files
from deepsmote_jax.train import distributed


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
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def metadata(self, step: int) -> dict:
    """The JSON metadata saved with checkpoint `step` ({} if none), read without restoring any array."""
    path = self.directory / str(step) / "metadata" / "metadata"
    try:
      return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"checkpoint {self.directory / str(step)}: unreadable metadata ({e})") from None

  def check_shapes(self, state_like, step: int) -> None:
    """Raises ValueError naming the first arrays whose stored shape differs from `state_like`'s."""
    stored = _stored_shapes(self.directory / str(step) / "state")
    wanted = {k: tuple(np.shape(v)) for k, v in _flat(to_saveable(state_like)).items()}
    problems = _shape_problems(stored, wanted)
    if problems:
      raise ValueError(f"checkpoint {self.directory / str(step)} does not fit this model: " + "; ".join(problems))

  def save(self, step: int, state, *, metadata: dict | None = None, force: bool = False) -> None:
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(to_saveable(state)), metadata=ocp.args.JsonSave(metadata or {})
      ),
      force=force,
    )

  def restore(self, state_like, step: int | None = None):
    """Restores into the structure (and shardings) of `state_like`; returns (state, metadata)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint to resume from in {self.directory}")
    target = to_saveable(jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like))
    restored = self._manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), metadata=ocp.args.JsonRestore())
    )
    return from_saveable(restored["state"], state_like), restored.get("metadata")

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _local_checkpointer() -> ocp.StandardCheckpointer:
  """An Orbax checkpointer of this process alone (with several processes Orbax otherwise waits for all)."""
  if distributed.process_count() == 1:
    return ocp.StandardCheckpointer()
  me = jax.process_index()
  only_me = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
  return ocp.StandardCheckpointer(multiprocessing_options=only_me)


def save_tree(path: str | os.PathLike, tree, *, meta: dict) -> pathlib.Path:
  """Writes `tree` (arrays) and `meta` (JSON) to the directory `path` atomically (tmp dir + rename).

  With several processes, process 0 writes and every process returns once it has (`tree` is the same on all).
  """
  path = pathlib.Path(path).absolute()
  if distributed.is_primary():
    _write_tree(path, tree, meta)
  distributed.barrier("deepsmote_save_tree")
  return path


def _write_tree(path: pathlib.Path, tree, meta: dict) -> None:
  tmp = files.temp_dir_beside(path)
  try:
    with _local_checkpointer() as ckptr:
      ckptr.save(tmp / "arrays", jax.device_get(to_saveable(tree)))
      ckptr.wait_until_finished()
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if path.exists():
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def read_meta(path: str | os.PathLike) -> dict:
  """`meta.json` of a directory written by `save_tree`; a missing or corrupt file is an error naming it."""
  path = pathlib.Path(path).absolute()
  if not path.is_dir():
    raise FileNotFoundError(f"exported model directory not found: {path}")
  meta_file = path / "meta.json"
  if not meta_file.is_file():
    raise FileNotFoundError(f"{path} is not an exported model directory (no meta.json)")
  try:
    meta = json.loads(meta_file.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{meta_file} is corrupt: {e}") from None
  if not isinstance(meta, dict):
    raise ValueError(f"{meta_file} is corrupt: not a JSON object")
  return meta


def load_tree(path: str | os.PathLike, like=None):
  """Reads a directory written by `save_tree`; returns (tree, meta). With `like`, restores its structure.

  The stored arrays are checked against `like` (names and shapes) before anything is restored, so an
  export whose arrays are missing or disagree with its meta.json is refused with one message naming it.
  """
  path = pathlib.Path(path).absolute()
  meta = read_meta(path)
  if not (path / "arrays").is_dir():
    raise ValueError(f"{path}: the arrays/ folder is missing (an incomplete or damaged export)")
  if like is not None:
    stored = _stored_shapes(path / "arrays")
    problems = _shape_problems(stored, {k: tuple(np.shape(v)) for k, v in _flat(to_saveable(like)).items()})
    if problems:
      raise ValueError(f"{path}: the stored arrays do not match its meta.json: " + "; ".join(problems))
  with _local_checkpointer() as ckptr:
    if like is not None:
      target = to_saveable(
        jax.tree.map(lambda x: np.zeros(np.shape(x), getattr(x, "dtype", None) or np.asarray(x).dtype), like)
      )
      saved = ckptr.restore(path / "arrays", target)
      return from_saveable(saved, like), meta
    return ckptr.restore(path / "arrays"), meta


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    name = f"{prefix}/{k}" if prefix else str(k)
    out.update(_flat(v, name) if isinstance(v, dict) else {name: v})
  return out


def _stored_shapes(directory: pathlib.Path) -> dict[str, tuple]:
  """{array path: shape} of an Orbax array directory, from its metadata only (no array is read)."""
  try:
    tree = _local_checkpointer().metadata(directory).item_metadata.tree
  except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many types for damaged folders
    raise ValueError(f"{directory}: cannot read the stored arrays ({type(e).__name__})") from None
  return {k: tuple(v.shape) for k, v in _flat(tree).items()}


def _shape_problems(stored: dict[str, tuple], wanted: dict[str, tuple], limit: int = 3) -> list[str]:
  problems = [f"{k} is missing" for k in wanted if k not in stored]
  problems += [f"{k} has shape {stored[k]}, expected {v}" for k, v in wanted.items() if k in stored and stored[k] != v]
  problems += [f"{k} is not part of this model" for k in stored if k not in wanted]
  return problems[:limit] + ([f"and {len(problems) - limit} more"] if len(problems) > limit else [])
