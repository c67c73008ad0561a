"""Train/validation/test splits, stratified by class and grouped by a key taken from the file name.

Grouping prevents leakage: magnetic_tile files `expN_num_ID` show the same physical tile under several
exposures, so every file of one `num_ID` must land on the same side (preset 'magnetic_tile'). Groups are
shuffled by a seeded generator and dealt, largest first, to the split whose share of the class is furthest
below its target, so per-class ratios are met as closely as whole groups allow; the last groups of a class
go to splits still without any, so a rare class reaches every split whenever it has enough groups.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from deepsmote_jax.data.folder import ImageSet

# Regex presets for `group_pattern`: the first capture group (or the whole match) is the group key.
GROUP_PATTERNS: dict[str, str | None] = {
  "stem": None,  # whole file stem: no grouping beyond the file itself
  "magnetic_tile": r"num_(\d+)",
}
DEFAULT_NAMES = {2: ("train", "test"), 3: ("train", "validation", "test")}


def file_stem(path: str) -> str:
  """Base name without extension; a patch suffix '#y_x' is dropped so patches group with their file."""
  path = path.split("#", 1)[0]
  return os.path.splitext(os.path.basename(path))[0]


def group_keys(files: Sequence[str], group_pattern: str | None = None) -> list[str]:
  """The group key of each file: `re.search(pattern, stem)` (first group if any), or the stem.

  `group_pattern` is a regex or a key of `GROUP_PATTERNS`; a file that does not match is an error.
  """
  pattern = GROUP_PATTERNS.get(group_pattern, group_pattern) if group_pattern else None
  if pattern is None:
    return [file_stem(f) for f in files]
  regex = re.compile(pattern)
  keys = []
  for f in files:
    m = regex.search(file_stem(f))
    if m is None:
      raise ValueError(f"file {f!r} does not match group pattern {pattern!r}")
    keys.append(m.group(1) if regex.groups else m.group(0))
  return keys


def _normalise_ratios(ratios: Sequence[float]) -> np.ndarray:
  r = np.asarray(ratios, np.float64)
  if r.ndim != 1 or len(r) < 2 or (r < 0).any() or r.sum() <= 0:
    raise ValueError(f"ratios must be >= 2 non-negative numbers, got {ratios}")
  if abs(r.sum() - 1.0) > 1e-6:
    raise ValueError(f"ratios must sum to 1, got {ratios} (sum {r.sum()})")
  return r


def split_indices(
  labels: Sequence[int] | np.ndarray,
  groups: Sequence[str],
  ratios: Sequence[float] = (0.8, 0.1, 0.1),
  *,
  seed: int = 0,
  names: Sequence[str] | None = None,
  class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
  """Sorted index arrays per split; a group never spans two splits.

  A group is dealt with the class most of its images have (ties: lowest label). A split with a ratio
  above 0 that gets no image of some class is a ValueError naming the class and the split.
  """
  labels = np.asarray(labels).reshape(-1)
  if len(groups) != len(labels):
    raise ValueError(f"{len(labels)} labels but {len(groups)} groups")
  r = _normalise_ratios(ratios)
  names = tuple(names) if names is not None else DEFAULT_NAMES.get(len(r))
  if names is None or len(names) != len(r) or len(set(names)) != len(names):
    raise ValueError(f"need {len(r)} distinct split names, got {names}")
  num_classes = int(labels.max()) + 1 if len(labels) else 0
  cname = lambda c: class_names[c] if class_names is not None else str(c)

  members: dict[str, list[int]] = {}
  for i, g in enumerate(groups):
    members.setdefault(g, []).append(i)
  by_class: dict[int, list[str]] = {}
  for g in sorted(members):
    counts = np.bincount(labels[members[g]], minlength=num_classes)
    by_class.setdefault(int(np.argmax(counts)), []).append(g)

  rng = np.random.default_rng(seed)
  assigned = [[] for _ in r]
  for c in sorted(by_class):
    keys = by_class[c]
    keys = [keys[i] for i in rng.permutation(len(keys))]
    keys.sort(key=lambda g: -len(members[g]))  # stable: shuffled order among equal sizes
    target = r * sum(len(members[g]) for g in keys)
    filled = np.zeros(len(r))
    for pos, g in enumerate(keys):
      empty = (filled == 0) & (r > 0)
      if len(keys) - pos <= empty.sum():  # just enough groups left: give each empty split one
        k = int(np.argmax(np.where(empty, target, -np.inf)))
      else:
        k = int(np.argmax(np.where(r > 0, target - filled, -np.inf)))
      assigned[k].extend(members[g])
      filled[k] += len(members[g])

  out = {name: np.sort(np.asarray(idx, np.int64)) for name, idx in zip(names, assigned)}
  present = sorted(set(labels.tolist()))
  for name, ratio in zip(names, r):
    if ratio <= 0:
      continue
    have = set(labels[out[name]].tolist())
    for c in present:
      if c not in have:
        n_groups = sum(1 for g in members if c in set(labels[members[g]].tolist()))
        raise ValueError(
          f"class {cname(c)!r} has no images in split {name!r} ({n_groups} group(s) of "
          f"{int((labels == c).sum())} image(s) for ratios {tuple(r.tolist())}): lower the "
          "ratio, add data or merge splits"
        )
  return out


def split_image_set(
  ds: ImageSet,
  ratios: Sequence[float] = (0.8, 0.1, 0.1),
  *,
  seed: int = 0,
  group_pattern: str | None = None,
  names: Sequence[str] | None = None,
) -> dict[str, ImageSet]:
  """Split an `ImageSet` by `ratios` (stratified, grouped by `group_keys(ds.files, group_pattern)`).

  Returns {split name: ImageSet}; names default to ('train', 'test') or ('train', 'validation', 'test').
  """
  idx = split_indices(
    ds.labels, group_keys(ds.files, group_pattern), ratios, seed=seed, names=names, class_names=ds.class_names
  )
  return {name: ds.subset(i) for name, i in idx.items()}


def save_manifest(splits: Mapping[str, ImageSet], path: str | os.PathLike, **meta) -> None:
  """Write {'class_names', 'splits': {name: [files]}, **meta} as JSON, to reproduce a split exactly."""
  class_names = None
  for s in splits.values():
    if class_names is not None and s.class_names != class_names:
      raise ValueError("all splits must share class names")
    class_names = s.class_names
  doc = {"class_names": class_names, "splits": {k: list(v.files) for k, v in splits.items()}, **meta}
  with open(path, "w") as f:
    json.dump(doc, f, indent=1)


def apply_manifest(ds: ImageSet, path_or_doc: str | os.PathLike | Mapping) -> dict[str, ImageSet]:
  """The splits a manifest names, taken from `ds` by file name; unknown files are a ValueError."""
  doc = path_or_doc
  if not isinstance(doc, Mapping):
    with open(doc) as f:
      doc = json.load(f)
  if doc.get("class_names") is not None and list(doc["class_names"]) != ds.class_names:
    raise ValueError(f"manifest classes {doc['class_names']} differ from {ds.class_names}")
  where = {f: i for i, f in enumerate(ds.files)}
  out = {}
  for name, files in doc["splits"].items():
    missing = [f for f in files if f not in where]
    if missing:
      raise ValueError(f"manifest split {name!r}: {len(missing)} file(s) not in the data, e.g. {missing[:3]}")
    out[name] = ds.subset([where[f] for f in files])
  return out
