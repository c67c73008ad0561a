"""The data stage: load the images once, split train/validation/test, make the training split scarce in NG.

Every later stage (autoencoder, generation, classifiers, report) and the standalone classifier job read
these saved splits, so a test image never reaches the autoencoder or the synthetic set.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pathlib

import numpy as np

from deepsmote_jax import files
from deepsmote_jax.data import protocols, splits
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.data.sources import load_source
from deepsmote_jax.models import presets
from deepsmote_jax.train import loop

SPLITS = ("train", "validation", "test")


def load_images(config, image_set: ImageSet | None = None) -> ImageSet:
  """`image_set` as given, or `config.data` loaded at the model's size; checked against the config."""
  spec = presets.get_preset(config.model.preset, channels=int(config.model.channels))
  ds = (
    image_set if image_set is not None else load_source(config.data, image_size=spec.image_size, channels=spec.channels)
  )
  want = (spec.image_size, spec.image_size, spec.channels)
  if ds.images.shape[1:] != want:
    raise ValueError(f"images are {ds.images.shape[1:]}, the model expects {want}")
  if len(ds.class_names) < 2:
    raise ValueError(f"only one class ({ds.class_names}) in the data: need OK and at least one defect class")
  pos = config.pipeline.positive_class
  if pos and pos not in ds.class_names:
    raise ValueError(f"config.pipeline.positive_class={pos!r} is not a class of the data {ds.class_names}")
  return ds


def make_scarce(train: ImageSet, imbalance) -> ImageSet:
  """Keeps `ok_count` OK images (0: all) and cuts every other class to `minority_ratio` x OK (0: as is)."""
  if not (imbalance.ok_count or imbalance.minority_ratio):
    return train
  counts = train.counts()
  if imbalance.ok_class not in train.class_names:
    raise ValueError(f"config.imbalance.ok_class={imbalance.ok_class!r} is not a class of the data {train.class_names}")
  ok = min(int(imbalance.ok_count) or counts[imbalance.ok_class], counts[imbalance.ok_class])
  ratio = float(imbalance.minority_ratio)
  target = {
    c: ok if c == imbalance.ok_class else (min(n, max(2, round(ratio * ok))) if ratio else n) for c, n in counts.items()
  }
  return protocols.subsample_per_class(train, target, seed=int(imbalance.seed))


def source_fingerprint(config, image_set: ImageSet | None = None) -> dict:
  """What the data stage reads, summarised so that any change shows: for an image folder every file's
  path, size and modification time (hashed, with counts); for an in-memory set its content hash."""
  if image_set is not None:
    return {"in_memory": loop.fingerprint(image_set.images, image_set.labels), "classes": image_set.class_names}
  data = config.data
  source = data.get("source", "folder")
  if source == "elpv":
    return {"source": "elpv", "package": importlib.metadata.version("elpv-dataset")}
  if source == "tfds":
    return {"source": "tfds", "name": data.get("name"), "split": data.get("split"), "data_dir": data.get("data_dir")}
  root = pathlib.Path(data.get("root") or "")
  if not root.is_dir():
    raise ValueError(f"config.data.root={str(root)!r} is not a folder")
  h, n_files, n_bytes = hashlib.sha256(), 0, 0
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
      path = pathlib.Path(dirpath) / name
      try:
        st = path.stat()
      except OSError:
        continue
      h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
      n_files, n_bytes = n_files + 1, n_bytes + st.st_size
  return {
    "source": "folder",
    "root": str(root.resolve()),
    "files": n_files,
    "bytes": n_bytes,
    "digest": h.hexdigest()[:16],
  }


def run(config, out: pathlib.Path, image_set: ImageSet | None = None) -> dict:
  """Writes `<out>/{train,validation,test}.npz`, `split_manifest.json` and `skipped.json` (inputs left
  out with `data.on_error='skip'`, with reasons); returns the class counts and the number skipped."""
  ds = load_images(config, image_set)
  files.atomic_write_json(out / "skipped.json", [{"file": f, "reason": r} for f, r in ds.skipped])
  files.atomic_write_json(out / "input_notes.json", [{"file": f, "note": n} for f, n in ds.notes])
  ratios = tuple(config.split.ratios)
  if len(ratios) != 3:
    raise ValueError(f"config.split.ratios must be (train, validation, test), got {ratios}")
  parts = splits.split_image_set(
    ds, ratios, seed=int(config.split.seed), group_pattern=config.split.group_pattern or None, names=SPLITS
  )
  parts["train"] = make_scarce(parts["train"], config.imbalance)
  empty = [c for c, n in parts["train"].counts().items() if n == 0]
  if empty:
    raise ValueError(
      f"class(es) {empty} have no training image after the split (config.split.ratios={ratios}, "
      f"{ds.counts()} images in all): add images or remove the class"
    )
  for name in SPLITS:
    save_split(out / f"{name}.npz", parts[name])
  splits.save_manifest(parts, out / "split_manifest.json")
  return {
    "class_names": parts["train"].class_names,
    "counts": {n: parts[n].counts() for n in SPLITS},
    "skipped": len(ds.skipped),
    "converted_with_notes": len(ds.notes),
  }


def save_split(path: pathlib.Path, s: ImageSet) -> None:
  np.savez(
    path,
    images=s.images,
    labels=s.labels,
    files=np.array(s.files, dtype=object),
    class_names=np.array(s.class_names, dtype=object),
  )


def load_split(data_dir: pathlib.Path, name: str) -> ImageSet:
  """One split saved by `run` (`name` in train / validation / test)."""
  with np.load(pathlib.Path(data_dir) / f"{name}.npz", allow_pickle=True) as z:
    return ImageSet(
      images=z["images"], labels=z["labels"], class_names=list(z["class_names"]), files=list(z["files"]), skipped=[]
    )
