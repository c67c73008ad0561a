"""Image figures of the report: the test images a run got wrong, and DeepSMOTE's labelled triplets.

* `wrong_images`: from a classifier run's `predictions.csv` (file, split, actual, p_<class>..., argmax,
  <positive>_at_threshold), the test images that the run's decision got wrong: actual NG it passed (missed NG)
  and actual non-NG it flagged (overkill). The decision is the recall-first threshold where the run has one,
  else the argmax.
* `write_gallery`: those images, read from the data stage's saved test split by file name, as a captioned
  grid (at most `MAX_IMAGES`).
* `write_triplets`: rows of base | synthetic | neighbour from a generated dataset's `manifest.csv`
  provenance (`base_file`, `neighbor_file` name training images), each labelled with its file name.
"""

from __future__ import annotations

import csv
import os
import pathlib

import numpy as np
from PIL import Image

from deepsmote_jax import visualize
from deepsmote_jax.jobs import prepare_data

MAX_IMAGES = 24  # per gallery
TRIPLET_ROWS = 8  # base | synthetic | neighbour rows per class figure


def read_predictions(path: str | os.PathLike) -> list[dict]:
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def wrong_images(rows: list[dict], positive_class: str, split: str = "test") -> dict:
  """{'decision': 'threshold' | 'argmax', 'missed': [files], 'overkill': [files], 'n_positive', 'n_negative'}
  of the `split` rows of a predictions.csv, in file order of the CSV."""
  rows = [r for r in rows if r.get("split") == split]
  column = f"{positive_class}_at_threshold"
  has_threshold = bool(rows) and all(r.get(column) in ("True", "False") for r in rows)

  def flagged(r: dict) -> bool:
    return r[column] == "True" if has_threshold else r["argmax"] == positive_class

  actual = [r["actual"] == positive_class for r in rows]
  return {
    "decision": "threshold" if has_threshold else "argmax",
    "missed": [r["file"] for r, a in zip(rows, actual) if a and not flagged(r)],
    "overkill": [r["file"] for r, a in zip(rows, actual) if not a and flagged(r)],
    "n_positive": sum(actual),
    "n_negative": len(rows) - sum(actual),
  }


class ImageLookup:
  """uint8 images of a split by file name: the data stage's saved split, else the file under a root folder
  (tiled runs keep tiles, not whole images, in their splits)."""

  def __init__(self, work: pathlib.Path, split: str, roots: tuple[str, ...] = ()):
    self.by_file: dict[str, np.ndarray] = {}
    try:
      s = prepare_data.load_split(work / "data", split)
      self.by_file = {str(f): img for f, img in zip(s.files, s.images)}
    except (OSError, KeyError, ValueError):
      pass
    self.roots = [pathlib.Path(r) for r in roots if r]

  def add(self, files: list[str], images: np.ndarray) -> None:
    self.by_file.update({str(f): img for f, img in zip(files, images)})

  def __call__(self, file: str) -> np.ndarray | None:
    if file in self.by_file:
      return self.by_file[file]
    for root in self.roots:
      for candidate in (root / file, root / file.removeprefix("test_root/")):
        if candidate.is_file():
          try:
            arr = np.asarray(Image.open(candidate))
          except OSError:
            continue
          return arr[..., None] if arr.ndim == 2 else arr
    return None


def write_gallery(files: list[str], lookup: ImageLookup, path: pathlib.Path, title: str) -> dict:
  """The first `MAX_IMAGES` of `files` as a captioned grid at `path`; nothing is written when `files` is
  empty. {'path' (None when not written), 'count', 'shown', 'files', 'not_found'}."""
  shown, images, not_found = [], [], []
  for f in files[:MAX_IMAGES]:
    img = lookup(f)
    if img is None:
      not_found.append(f)
      continue
    shown.append(f)
    images.append(img)
  out = {"path": None, "count": len(files), "shown": len(shown), "files": list(files), "not_found": not_found}
  if images:
    more = f" (first {MAX_IMAGES} of {len(files)})" if len(files) > MAX_IMAGES else ""
    out["path"] = str(visualize.captioned_grid(images, shown, path, columns=6, title=title + more))
  elif path.exists():
    path.unlink()
  return out


def read_manifest(dataset_dir: pathlib.Path) -> list[dict]:
  with (dataset_dir / "manifest.csv").open(newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def train_lookup(work: pathlib.Path) -> ImageLookup:
  """Training images by the names generate's manifest gives them (whole images, or tiles when tiled)."""
  lookup = ImageLookup(work, "train")
  if not lookup.by_file:
    try:
      tiled = prepare_data.load_tiled_split(work / "data", "train")
      lookup.add(tiled.tiles.files, tiled.tiles.images)
    except (OSError, KeyError, ValueError, AttributeError):
      pass
  return lookup


def write_triplets(dataset_dir: pathlib.Path, lookup: ImageLookup, out: pathlib.Path, penalty: str) -> dict:
  """`triplets_<penalty>_<class>.png` per over-sampled class: rows of base | synthetic | neighbour (the first
  `TRIPLET_ROWS` synthetic rows of the manifest whose three images are found). {class: path}."""
  rows = [r for r in read_manifest(dataset_dir) if str(r.get("synthetic")) in ("1", "True", "true")]
  by_class: dict[str, list[dict]] = {}
  for r in rows:
    by_class.setdefault(r["class"], []).append(r)
  figures = {}
  for cname, class_rows in by_class.items():
    images, captions = [], []
    for r in class_rows:
      base, neighbour = lookup(r["base_file"]), lookup(r["neighbor_file"])
      synth_path = dataset_dir / r["file"]
      if base is None or neighbour is None or not synth_path.is_file():
        continue
      synth = np.asarray(Image.open(synth_path))
      synth = synth[..., None] if synth.ndim == 2 else synth
      gap = f" (gap {float(r['gap']):.2f})" if r.get("gap") else ""
      images += [base, synth, neighbour]
      captions += [r["base_file"], pathlib.Path(r["file"]).name + gap, r["neighbor_file"]]
      if len(images) >= 3 * TRIPLET_ROWS:
        break
    if not images:
      continue
    path = out / f"triplets_{penalty}_{cname}.png"
    figures[cname] = str(
      visualize.captioned_grid(
        images,
        captions,
        path,
        columns=3,
        title=f"{penalty} / {cname}: synthetic decoded at base + gap x (neighbour - base)",
        column_titles=["base (real)", "synthetic", "neighbour (real)"],
        cell=2.2,
      )
    )
  return figures
