"""Tile classifiers for large images (`config.data.patches.mode` 'tiles' / 'defect_crops'): multiple-instance
training from image labels, and every decision, threshold and metric made per image.

The data stage (`prepare_data`) splits by image and saves each split's tiles with their image index. A run
here trains the configured classifier on tiles (`train/mil.py`: OK tiles and known NG tiles as one-tile bags,
each NG image without a mask as a bag pooled by its top-k tiles) and scores each validation and test image by
the mean of its `top_k` highest tile NG probabilities. It writes what the default runs write, per image:
`predictions.npz` (`val_proba`, `val_labels`, `test_proba`, `test_labels`, `class_names`) so the report works
unchanged, plus `predictions.csv` (file, split, actual class, P(class), decisions) per image.

Oversampling methods on tiles. The synthetic NG tiles of `smote_pixels` (pixels) and `deepsmote_<penalty>`
(latent codes, made by the generate stage from `generation_set`) are drawn from NG *sources*: the tiles known
to show a defect (mask-overlapping tiles, defect crops) and, for each NG image without a mask, its `top_k` key
tiles -- the tiles farthest from every OK tile in the same feature space. Interpolating between all tiles of
NG images would mostly produce background labelled NG, which teaches overkill. Synthetic tiles join training
as one-tile NG bags; 'auto' sampling balances the sources against the OK tiles, so NG bags plus synthetic
tiles about equal the OK tiles. Class weights and random oversampling count bags.
"""

from __future__ import annotations

import os
import pathlib
import time

import jax
import numpy as np

from deepsmote_jax import files, smote
from deepsmote_jax.data import tiles as tiles_lib
from deepsmote_jax.data.folder import ImageSet
from deepsmote_jax.export import export_classifier, load_classifier
from deepsmote_jax.jobs import classifier_setup, prepare_data, stage
from deepsmote_jax.jobs.classifier_setup import RUN_INFO, sampling_strategy
from deepsmote_jax.jobs.generate import read_synthetic
from deepsmote_jax.jobs.predict import PREDICTIONS_CSV, save_validation_decision, write_run_predictions
from deepsmote_jax.train import mil
from deepsmote_jax.train.autoencoder import encode_images
from deepsmote_jax.train.classifier import predict_proba


def is_tiled(config) -> bool:
  """Whether `config.data.patches.mode` asks for tiles (checked: a bad setting is a ValueError)."""
  return prepare_data.tile_settings(config).mode != "none"


def image_proba(tile_proba: np.ndarray, split: tiles_lib.TiledSplit, positive: int, k: int) -> np.ndarray:
  """(n_images, 2) class probabilities of each image: NG = the mean of its k highest tile NG probabilities."""
  ng = tiles_lib.aggregate(np.asarray(tile_proba)[:, positive], split.bag, len(split.image_files), k)
  out = np.empty((len(ng), 2), np.float32)
  out[:, positive], out[:, 1 - positive] = ng, 1.0 - ng
  return out


def ng_sources(split: tiles_lib.TiledSplit, positive: int, features: np.ndarray, k: int) -> np.ndarray:
  """Tile indices SMOTE draws synthetic NG tiles from: the known NG instances and each mask-less NG image's
  k key tiles (farthest from every OK tile in `features`)."""
  inst = split.instance == 1
  ng_image = split.image_labels[split.bag] == positive
  has_inst = np.bincount(split.bag[inst], minlength=len(split.image_files)) > 0
  candidates = ng_image & ~has_inst[split.bag]
  ok = ~ng_image
  keys = tiles_lib.key_tiles(features, split.bag, candidates, ok, k)
  return np.union1d(np.flatnonzero(inst), keys)


def generation_set(config, work: pathlib.Path, model) -> ImageSet:
  """The training tiles the generate stage over-samples: every OK tile and the NG sources (`ng_sources`,
  key tiles chosen by latent distance with the stage's own encoder)."""
  split = prepare_data.load_tiled_split(work / "data", "train")
  pos = split.tiles.class_names.index(config.pipeline.positive_class)
  codes = np.asarray(encode_images(model, split.tiles.images))
  keep = np.union1d(np.flatnonzero(split.image_labels[split.bag] != pos), ng_sources(split, pos, codes, _top_k(config)))
  return split.tiles.subset(keep)


def _top_k(config) -> int:
  return int(prepare_data.tile_settings(config).top_k)


def _smote_pixels(config, split, positive: int, seed: int, strategy) -> tuple[np.ndarray, np.ndarray]:
  """Synthetic NG tiles by SMOTE on the pixels of the OK tiles and the NG sources (chosen by pixel distance)."""
  x = split.tiles.images.reshape(len(split.tiles), -1).astype(np.float32)
  keep = np.union1d(
    np.flatnonzero(split.image_labels[split.bag] != positive), ng_sources(split, positive, x, _top_k(config))
  )
  names = np.asarray(split.tiles.class_names)[split.tiles.labels[keep]]
  x_res, y_res = smote.fit_resample(  # the originals, then the synthetic rows
    jax.random.key(seed), x[keep], names, k_neighbors=int(config.generate.k_neighbors), sampling_strategy=strategy
  )
  shape = (-1,) + split.tiles.images.shape[1:]
  synth = np.clip(np.rint(np.asarray(x_res[len(keep) :])), 0, 255).astype(np.uint8).reshape(shape)
  return synth, np.asarray([split.tiles.class_names.index(str(c)) for c in y_res[len(keep) :]], np.int32)


def _method(config, work: pathlib.Path, method: str, seed: int, split, positive: int, strategy):
  """(class weighting, oversampling, synthetic tiles, their labels) of a method."""
  none = (np.zeros((0,) + split.tiles.images.shape[1:], np.uint8), np.zeros(0, np.int32))
  if method == "none":
    return ("none", "none") + none
  if method == "class_weights":
    return ("balanced", "none") + none
  if method == "random_oversampling":
    return ("none", "random") + none
  if method == "smote_pixels":
    return ("none", "none") + _smote_pixels(config, split, positive, seed, strategy)
  if method.startswith("deepsmote_"):
    synth, labels = read_synthetic(work / f"generate_{method.split('_', 1)[1]}" / "dataset", split.tiles.class_names)
    return ("none", "none") + ((synth, labels) if len(synth) else none)
  raise ValueError(f"unknown method {method!r}")


def _write_predictions(run_dir: pathlib.Path, class_names, parts: dict) -> None:
  """predictions.npz (image level, the report's input); predictions.csv is written once the decision is."""
  tmp = run_dir / "predictions.tmp.npz"
  np.savez(
    tmp,
    val_proba=parts["validation"][1],
    val_labels=parts["validation"][0].image_labels,
    test_proba=parts["test"][1],
    test_labels=parts["test"][0].image_labels,
    class_names=np.array(class_names, dtype=object),
  )
  os.replace(tmp, run_dir / "predictions.npz")


def _training_tiles(config, work, method: str, seed: int, train, positive: int, extra, strategy):
  """(tiles, bags, class weighting, oversampling, number of synthetic or extra tiles) of a method."""
  class_names = train.tiles.class_names
  weighting, oversampling, synth, synth_labels = _method(config, work, method, seed, train, positive, strategy)
  if extra is not None:
    if extra.class_names != class_names:
      raise ValueError(f"extra training images have classes {extra.class_names}, the data has {class_names}")
    synth, synth_labels = np.concatenate([synth, extra.images]), np.concatenate([synth_labels, extra.labels])
  if len(synth) and synth.shape[1:] != train.tiles.images.shape[1:]:
    raise ValueError(f"synthetic tiles for {method} are {synth.shape[1:]}, the tiles {train.tiles.images.shape[1:]}")
  images = np.concatenate([train.tiles.images, synth]) if len(synth) else train.tiles.images
  bags = tiles_lib.training_bags(train, positive).concat(tiles_lib.singles(len(train.tiles), synth_labels))
  return images, bags, weighting, oversampling, len(synth)


def _export_and_predict(result, run_dir: pathlib.Path, config, tcfg, tiling: dict, shape, splits: dict) -> None:
  """Exports the best epoch and writes the image-level predictions of the exported model."""
  c, class_names = config.classifier, splits["validation"].tiles.class_names
  pos = class_names.index(config.pipeline.positive_class)
  export_classifier(
    result.best_model,
    run_dir / "best",
    name=c.name,
    class_names=class_names,
    image_size=int(shape[0]),
    in_channels=int(shape[-1]),
    kwargs=dict(c.kwargs),
    extra={"step": result.summary["best_step"], tcfg.select_metric: result.summary["best_score"], "tiles": tiling},
  )
  best, _ = load_classifier(run_dir / "best", expect_name=c.name, expect_classes=class_names)
  parts = {
    name: (s, image_proba(predict_proba(best, s.tiles.images, in_channels=int(shape[-1])), s, pos, tiling["top_k"]))
    for name, s in splits.items()
  }
  _write_predictions(run_dir, class_names, parts)
  val_split, val_proba = parts["validation"]
  decision = save_validation_decision(run_dir / "best", config.pipeline, val_split.image_labels, val_proba, class_names)
  rows = {name: (split.image_files, split.image_labels, proba) for name, (split, proba) in parts.items()}
  write_run_predictions(run_dir / PREDICTIONS_CSV, rows, class_names, decision)


def train_one(
  config, work: pathlib.Path, method: str, seed: int, run_dir: pathlib.Path, *, extra=None, progress=True, data_dir=None
) -> dict:
  """One tile classifier for `method` (plus optional extra tiles as one-tile bags) trained by MIL on the
  saved tiled splits (of `data_dir`, default `<work>/data`); exports the best epoch (by the image-level
  validation metric) to `run_dir/best` and writes image-level predictions."""
  c, ts = config.classifier, prepare_data.tile_settings(config)
  data_dir = data_dir or work / "data"
  train, val, test = (prepare_data.load_tiled_split(data_dir, n) for n in prepare_data.SPLITS)
  class_names = train.tiles.class_names
  pos = class_names.index(config.pipeline.positive_class)
  if not (val.image_labels == pos).any():
    raise ValueError(f"config.pipeline.positive_class={class_names[pos]!r} has no image in the validation split")
  images, bags, weighting, oversampling, n_synth = _training_tiles(
    config, work, method, int(seed), train, pos, extra, sampling_strategy(config.generate.sampling_strategy)
  )
  tcfg, model = classifier_setup.build(
    config,
    num_classes=len(class_names),
    image_shape=images.shape[1:],
    seed=seed,
    class_weighting=weighting,
    oversampling=oversampling,
  )
  counts = {n: int((bags.label == i).sum()) for i, n in enumerate(class_names)}
  stage.log(f"tile classifier {c.name} / {method} / seed {seed}: {len(images)} tiles in bags {counts}")
  t0 = time.perf_counter()
  result = mil.train_mil(
    model,
    images,
    bags.index,
    bags.valid,
    bags.label,
    tcfg,
    num_classes=len(class_names),
    positive=pos,
    top_k=int(ts.top_k),
    val_tiles=val.tiles.images,
    val_images=lambda tile_proba: (val.image_labels, image_proba(tile_proba, val, pos, ts.top_k)),
    workdir=str(run_dir),
    progress=progress,
  )
  size = images.shape[1]
  tiling = {
    "mode": ts.mode,
    "size": ts.tile_size(size),
    "stride": ts.tile_stride(size),
    "top_k": int(ts.top_k),
    "min_std": float(ts.min_std),
  }
  _export_and_predict(result, run_dir, config, tcfg, tiling, images.shape[1:], {"validation": val, "test": test})
  info = {
    "method": method,
    "seed": int(seed),
    "train_counts": counts,
    "train_images": train.image_counts(),
    "train_tiles": int(len(images)),
    "synthetic_tiles": int(n_synth),
    "tiles": tiling,
    "best_step": result.summary.get("best_step"),
    "wall_s": time.perf_counter() - t0,
  }
  files.atomic_write_json(run_dir / "train_summary.json", result.summary)
  files.atomic_write_json(run_dir / RUN_INFO, info)
  return info
