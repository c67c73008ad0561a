"""The data stage: load the images once, split train/validation/test, make the training split scarce in NG.

Every later stage (autoencoder, generation, classifiers, report) and the standalone classifier job read
these saved splits, so a test image never reaches the autoencoder or the synthetic set.
"""
from __future__ import annotations

import pathlib

import numpy as np

from deepsmote_jax.data import protocols, splits
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.data.sources import load_source
from deepsmote_jax.models import presets

SPLITS = ("train", "validation", "test")


def load_images(config, image_set: ImageSet | None = None) -> ImageSet:
  """`image_set` as given, or `config.data` loaded at the model's size; checked against the config."""
  spec = presets.get_preset(config.model.preset, channels=int(config.model.channels))
  ds = image_set if image_set is not None else load_source(config.data, image_size=spec.image_size,
                                                             channels=spec.channels)
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
    raise ValueError(f"config.imbalance.ok_class={imbalance.ok_class!r} is not a class of the data "
                     f"{train.class_names}")
  ok = min(int(imbalance.ok_count) or counts[imbalance.ok_class], counts[imbalance.ok_class])
  ratio = float(imbalance.minority_ratio)
  target = {c: ok if c == imbalance.ok_class else (min(n, max(2, round(ratio * ok))) if ratio else n)
            for c, n in counts.items()}
  return protocols.subsample_per_class(train, target, seed=int(imbalance.seed))


def run(config, out: pathlib.Path, image_set: ImageSet | None = None) -> dict:
  """Writes `<out>/{train,validation,test}.npz` and `split_manifest.json`; returns the class counts."""
  ds = load_images(config, image_set)
  ratios = tuple(config.split.ratios)
  if len(ratios) != 3:
    raise ValueError(f"config.split.ratios must be (train, validation, test), got {ratios}")
  parts = splits.split_image_set(ds, ratios, seed=int(config.split.seed),
                                 group_pattern=config.split.group_pattern or None, names=SPLITS)
  parts["train"] = make_scarce(parts["train"], config.imbalance)
  for name in SPLITS:
    save_split(out / f"{name}.npz", parts[name])
  splits.save_manifest(parts, out / "split_manifest.json")
  return {"class_names": parts["train"].class_names, "counts": {n: parts[n].counts() for n in SPLITS}}


def save_split(path: pathlib.Path, s: ImageSet) -> None:
  np.savez(path, images=s.images, labels=s.labels, files=np.array(s.files, dtype=object),
           class_names=np.array(s.class_names, dtype=object))


def load_split(data_dir: pathlib.Path, name: str) -> ImageSet:
  """One split saved by `run` (`name` in train / validation / test)."""
  with np.load(pathlib.Path(data_dir) / f"{name}.npz", allow_pickle=True) as z:
    return ImageSet(images=z["images"], labels=z["labels"], class_names=list(z["class_names"]),
                    files=list(z["files"]), skipped=[])
