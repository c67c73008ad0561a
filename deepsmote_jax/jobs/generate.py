"""DeepSMOTE generation: an imbalanced `ImageSet` in, a balanced image folder out.

`generate_dataset` encodes every image (eval-mode BatchNorm), over-samples the latent codes per class with
`smote.fit_resample(..., return_provenance=True)` (the synthetic codes with their base and neighbour rows),
decodes the synthetic codes and writes

  <out>/<class>/...                       the originals (copied, linked or re-encoded as PNG) and
  <out>/<class>/synthetic_<class>_00001.png  the synthetic images (the model's size, the input's channels),
  <out>/manifest.csv                      one row per image file (provenance of the synthetic ones; the
                                          `split` column names the data split the file or its bases came from),
  <out>/grids/<class>.png                 base | synthetic | neighbour triplets of each over-sampled class,
  <out>/summary.json                      counts before/after, settings, model, the data split, timings.

`deepsmote generate` (`generate_from_config`) over-samples the training split of the data stage only (an
earlier run's data folder with `--split DIR`, else the stage run into `<out>/data`), so no validation or test
image is a base or neighbour of a synthetic image: `summary.json`'s `data_split` and the manifest show it.

Every check on the input (shapes, classes, sampling strategy, neighbour counts, NaN codes, the output
folder) runs before anything is written, and the folder is built as `<out>.tmp-XXXX` beside `<out>` and
renamed at the end: an interrupted run never leaves a folder that looks complete.

Memory is bounded in the number of images: the images come in `_CHUNK_BATCHES` batches at a time (slices of
an `ImageSet`; a streamed one -- `config.data.stream`, `load_image_folder(..., stream=True)` -- holds no image
and decodes just those files), only
the latent codes, the synthetic codes and per-row indices and paths stay resident, and the synthetic images
are decoded and written as PNGs chunk by chunk; the manifest is written row by row.
"""

from __future__ import annotations

import csv
import datetime
import os
import pathlib
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from PIL import Image

from deepsmote_jax import files, smote, visualize
from deepsmote_jax.data.folder import ImageSet, save_image_folder
from deepsmote_jax.export import load_autoencoder
from deepsmote_jax.jobs import prepare_data, stage
from deepsmote_jax.jobs.classifier_setup import sampling_strategy as parse_sampling_strategy
from deepsmote_jax.models import presets
from deepsmote_jax.train.autoencoder import SYNTHESES, encode_images, synthesize

COPY_MODES = ("copy", "link", "png", "none")
MANIFEST_COLUMNS = ("file", "class", "synthetic", "base_file", "neighbor_file", "gap", "source", "split")
SYNTHETIC_PREFIX = "synthetic_"
_GRID_TRIPLETS = 12  # base | synthetic | neighbour triplets per class grid
_CHUNK_BATCHES = 8  # batches per encode_images / decode_codes call and per PNG write (bounds host memory)


def _image_batches(source: ImageSet, rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
  """The uint8 images of `source` at `rows`, in that order, `size` at a time (the last batch shorter); a
  streamed set (`config.data.stream`) decodes just those files."""
  for start in range(0, len(rows), size):
    yield source.images[rows[start : start + size]]


def _take(source: ImageSet, rows) -> np.ndarray:
  """The few images at `rows` (the grids' bases and neighbours) as one array."""
  return source.images[np.asarray(rows, np.int64)]


def synthetic_name(class_name: str, index: int, width: int = 5) -> str:
  """'synthetic_<class>_<00001>.png' (index counted from 1 within the class)."""
  return f"{SYNTHETIC_PREFIX}{class_name}_{index:0{width}d}.png"


def _within_class(rel: str, class_name: str) -> str:
  """`rel` (relative to the data root) without its leading '<class>/' folder, when it has one."""
  parts = pathlib.PurePath(rel).parts
  return os.path.join(*parts[1:]) if len(parts) > 1 and parts[0] == class_name else rel


def _png_name(rel: str, class_name: str) -> str:
  """Output name of an original written from memory: its path within the class flattened ('/', '#' -> '_')."""
  path, _, patch = _within_class(rel, class_name).partition("#")  # patches: '<file>#<y>_<x>'
  stem = os.path.splitext(path)[0].replace(os.sep, "_").replace("/", "_")
  return (stem or "image") + (f"_{patch}" if patch else "") + ".png"


def _check_out_dir(out: pathlib.Path, overwrite: bool) -> None:
  if out.exists() or out.is_symlink():
    if not out.is_dir() or out.is_symlink():
      raise ValueError(f"output path {str(out)!r} exists and is not a directory")
    if any(out.iterdir()) and not overwrite:
      raise ValueError(
        f"output folder {str(out)!r} exists and is not empty; pass overwrite=True "
        "(--overwrite) to replace it, or choose another folder"
      )
  parent = next((p for p in out.parents if p.exists()), None)
  if parent is not None and not parent.is_dir():
    raise ValueError(f"output path {str(out)!r} lies under {str(parent)!r}, which is not a directory")


def _check_inputs(
  model,
  image_set: ImageSet,
  *,
  sampling_strategy,
  k_neighbors: int,
  kind: str,
  strict: bool,
  copy_originals: str,
  extra_dirs: dict,
) -> dict[str, int]:
  """Everything that can be checked without the model's codes; returns the images per class."""
  clash = sorted(set(extra_dirs) & set(image_set.class_names))
  if clash:
    raise ValueError(f"class(es) {clash} have the name of a folder the output holds besides the classes")
  if copy_originals not in COPY_MODES:
    raise ValueError(f"copy_originals must be one of {COPY_MODES}, got {copy_originals!r}")
  if kind not in smote.KINDS:
    raise ValueError(f"kind must be one of {smote.KINDS}, got {kind!r}")
  if int(k_neighbors) < 1:
    raise ValueError(f"k_neighbors must be >= 1, got {k_neighbors}")
  spec = model.spec
  want = (spec.image_size, spec.image_size, spec.channels)
  if len(image_set) == 0:
    raise ValueError("the image set is empty")
  if image_set.image_shape != want:
    raise ValueError(
      f"the images are {image_set.image_shape} (H, W, C) but the model {spec.name!r} expects "
      f"{want} (image_size={spec.image_size}, channels={spec.channels}); load the data at the "
      "model's size and channels"
    )
  counts = image_set.counts()
  empty = [c for c, n in counts.items() if n == 0]
  if empty:
    raise ValueError(f"class(es) {empty} have no images; remove them from the image set")
  bad_names = [c for c in counts if not c or os.sep in c or c in (".", "..", "grids")]
  if bad_names:
    raise ValueError(f"class name(s) {bad_names} cannot be used as output folder names")
  # Strategy errors (unknown class, fewer than exist, ...) name the class: labels are class names.
  targets = smote.sampling_targets(counts, sampling_strategy, y=np.asarray(image_set.class_names)[image_set.labels])
  for c, n_new in targets.items():
    if n_new == 0:
      continue
    if counts[c] < 2:
      raise ValueError(
        f"class {c!r} has a single image: SMOTE needs at least one neighbour in the class "
        "(add images, or leave the class out of sampling_strategy)"
      )
    if strict and kind != "borderline-2" and counts[c] <= k_neighbors:
      raise ValueError(
        f"class {c!r} has {counts[c]} images, fewer than k_neighbors + 1 = {k_neighbors + 1} "
        "(strict); lower k_neighbors or pass strict=False to use fewer neighbours for it"
      )
  return counts


def _check_codes(codes: np.ndarray, image_set: ImageSet) -> None:
  bad = ~np.all(np.isfinite(codes), axis=1)
  if bad.any():
    names = np.asarray(image_set.class_names)[image_set.labels[bad]]
    classes, n_bad = np.unique(names, return_counts=True)
    detail = ", ".join(f"class {str(c)!r}: {n}" for c, n in zip(classes, n_bad))
    first = image_set.files[int(np.flatnonzero(bad)[0])]
    raise ValueError(
      f"the encoder produced NaN/inf latent codes ({detail} image(s), e.g. {first!r}); the model "
      "has probably diverged: retrain it (lower learning rate, float32) before generating"
    )


def _plan_originals(image_set: ImageSet, copy_originals: str, source_root) -> list[tuple[str, str | None]]:
  """(output path relative to out, source path to copy/link or None = write PNG) per original image."""
  if copy_originals == "none":
    return []
  plan = []
  missing = []
  for rel, label in zip(image_set.files, image_set.labels):
    cls = image_set.class_names[int(label)]
    src = os.path.join(os.fspath(source_root), rel) if source_root is not None else None
    if copy_originals in ("copy", "link") and src is not None and os.path.isfile(src):
      plan.append((os.path.join(cls, _within_class(rel, cls)), src))
    elif copy_originals in ("copy", "link") and src is not None and "#" not in rel:
      missing.append(src)
    else:  # from memory (no source root, a patch of a file, or 'png'): the model-size image as PNG
      plan.append((os.path.join(cls, _png_name(rel, cls)), None))
  if missing:
    raise ValueError(
      f"{len(missing)} original file(s) not found under source_root, e.g. {missing[:3]}; pass the "
      "folder the image set was loaded from, or copy_originals='png'"
    )
  return plan


def _dedupe(paths: list[str]) -> list[str]:
  """Makes output paths unique (case-insensitively, for portable folders) by appending '_<n>'."""
  seen, out = set(), []
  for p in paths:
    q, n = p, 1
    while q.lower() in seen:
      stem, ext = os.path.splitext(p)
      q, n = f"{stem}_{n}{ext}", n + 1
    seen.add(q.lower())
    out.append(q)
  return out


def _write_grid(path: pathlib.Path, base: np.ndarray, synthetic: np.ndarray, neighbor: np.ndarray) -> None:
  """Rows of base | synthetic | neighbour triplets (two triplets per row)."""
  n = len(synthetic)
  tiles = np.empty((3 * n,) + synthetic.shape[1:], np.uint8)
  tiles[0::3], tiles[1::3], tiles[2::3] = base, synthetic, neighbor
  visualize.save_png(visualize.grid(tiles, columns=6 if n > 1 else 3), path)


def oversampling(config) -> dict:
  """`generate_dataset`'s oversampling arguments from `config.generate`."""
  g = config.generate
  strategy = parse_sampling_strategy(g.sampling_strategy)
  if g.synthesis not in SYNTHESES:
    raise ValueError(f"config.generate.synthesis={g.synthesis!r}: choose one of {SYNTHESES}")
  return dict(
    sampling_strategy=strategy, k_neighbors=int(g.k_neighbors), kind=g.kind, seed=int(g.seed), synthesis=g.synthesis
  )


def generate_dataset(
  model,
  image_set: ImageSet,
  out_dir: str | os.PathLike,
  *,
  sampling_strategy: Any = "auto",
  k_neighbors: int = 5,
  kind: str = "smote",
  seed: int = 0,
  synthesis: str = "decode",
  strict: bool = False,
  copy_originals: str = "copy",
  source_root: str | os.PathLike | None = None,
  batch_size: int = 256,
  overwrite: bool = False,
  model_path: str | os.PathLike | None = None,
  data_split: dict | None = None,
  extra_dirs: dict[str, pathlib.Path] | None = None,
) -> dict:
  """Writes a class-balanced image folder: the originals plus DeepSMOTE samples; returns the summary.

  Args:
    model: trained `Autoencoder` (e.g. from `export.load_autoencoder`).
    image_set: the images (the model's size and channels), e.g. `load_image_folder(root, ...)`; streamed
      (`load_image_folder(root, ..., stream=True)`) they are read in batches: same output, bounded memory.
    out_dir: folder to create (`<out>/<class>/*`, `manifest.csv`, `grids/`, `summary.json`).
    sampling_strategy: imblearn semantics ('auto', 'minority', 'not minority', 'all', a float for two
      classes, {class name: target count}, or a callable of the class-name labels).
    k_neighbors: SMOTE's k; a class with k or fewer images uses fewer (warning) unless `strict`.
    kind: 'smote', 'borderline-1', 'borderline-2' or 'adasyn'.
    seed: `jax.random.key(seed)` drives the draw.
    synthesis: 'decode' (the paper: the decoded synthetic code) or 'residual' (its base image plus the decoded
      change from the base's code, so detail the decoder loses is kept; `train.autoencoder.synthesize`).
    strict: raise instead of warning when a class has k_neighbors or fewer images.
    copy_originals: 'copy' / 'link' (hard link, else symlink) the files under `source_root`; 'png' writes
      the in-memory originals at the model size (also what 'copy'/'link' do without `source_root`, e.g.
      for ELPV, and for patches); 'none' writes only synthetic images.
    source_root: the folder `image_set.files` are relative to (default for a streamed folder: its root).
    batch_size: encode/decode batch.
    overwrite: replace an existing non-empty `out_dir` (removed only once the new folder is complete).
    model_path: recorded in the summary.
    data_split: where `image_set` comes from (`prepare_data.split_record` plus 'split': the split's name),
      recorded in the summary (`data_split`) and in the manifest's `split` column.
    extra_dirs: {name: folder} moved into the output folder with it (e.g. the data stage it was made from).

  Returns:
    The summary (also `summary.json`). Manifest `base_file`/`neighbor_file` are `image_set.files` entries
    (relative to the data root); the `source` column gives that entry for each original row.
  """
  t0 = time.perf_counter()
  out = pathlib.Path(out_dir).absolute()
  settings = dict(sampling_strategy=sampling_strategy, kind=kind, k_neighbors=k_neighbors, strict=strict, seed=seed)
  if synthesis not in SYNTHESES:
    raise ValueError(f"synthesis must be one of {SYNTHESES}, got {synthesis!r}")
  checked = {k: v for k, v in settings.items() if k != "seed"}
  if source_root is None and image_set.streamed:
    source_root = image_set.images.root
  counts = _check_inputs(model, image_set, **checked, copy_originals=copy_originals, extra_dirs=extra_dirs or {})
  _check_out_dir(out, overwrite)
  originals = _plan_originals(image_set, copy_originals, source_root)
  names, codes = _encode(model, image_set, batch_size)
  t_encode = time.perf_counter()
  res, caught = _resample(codes, names, **settings)
  t_resample = time.perf_counter()
  orig_paths, syn_paths = _output_paths(originals, res)  # decided (and checked for clashes) before writing

  tmp = files.temp_dir_beside(out)
  try:
    options = dict(
      copy_originals=copy_originals,
      batch_size=batch_size,
      split=(data_split or {}).get("split", ""),
      synthesis=synthesis,
      codes=codes,
    )
    written, links = _write_files(tmp, out, model, image_set, names, res, originals, (orig_paths, syn_paths), options)
    for name, folder in (extra_dirs or {}).items():
      os.rename(folder, tmp / name)
    times = dict(encode=t_encode - t0, resample=t_resample - t_encode, decode_write=time.perf_counter() - t_resample)
    summary = _summary(out, counts, res, written, settings | {"synthesis": synthesis}, caught, times) | _sources(
      copy_originals, links, source_root, _model_record(model, model_path), data_split
    )
    files.atomic_write_json(tmp / "summary.json", summary)
    old = _commit(tmp, out, overwrite)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
  return summary


def _write_files(tmp: pathlib.Path, out, model, image_set, names, res, originals, paths, options: dict):
  """The class folders, originals, synthetic images and manifest.csv in `tmp`; returns (files written per
  class, links). options: copy_originals, batch_size, the split's name, synthesis and the images' codes."""
  orig_paths, syn_paths = paths
  for c in image_set.class_names:
    (tmp / c).mkdir(parents=True, exist_ok=True)
  batch_size = options["batch_size"]
  links = _write_originals(tmp, model.spec, image_set, originals, orig_paths, options["copy_originals"], batch_size)
  _write_synthetic(tmp, model, image_set, res, syn_paths, batch_size, options["synthesis"], options["codes"])
  rows = _manifest_rows(image_set, names, orig_paths, syn_paths, res, options["split"])
  written = _write_manifest(tmp, rows, list(image_set.class_names), out)
  return written, links


def generate_from_config(
  config,
  model_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  split: str | os.PathLike | None = None,
  strict: bool = False,
  copy_originals: str = "copy",
  batch_size: int = 256,
  overwrite: bool = False,
) -> dict:
  """`deepsmote generate`: the exported encoder/decoder at `model_dir` over the TRAINING split of the data
  stage with `config.generate` (sampling_strategy, kind, k_neighbors, seed); writes the balanced folder
  `out_dir` and returns `generate_dataset`'s summary.

  The split is `split` (an earlier run's data folder, e.g. `<train-autoencoder workdir>/data`, checked against
  the config), or the data stage run with the config's split rule and kept as `<out_dir>/data`. A model
  trained on another split (its export records the split) is refused: its training images may be this
  split's test images. Originals are copied from the folder the split was made from (`config.data.root`)."""
  if prepare_data.tile_settings(config).mode != "none":
    raise ValueError(
      f"config.data.patches.mode={config.data.patches.mode!r}: the standalone generate works on whole images; "
      "run tiles through `deepsmote pipeline`"
    )
  out = pathlib.Path(out_dir).absolute()
  _check_out_dir(out, overwrite)
  model, meta = load_autoencoder(model_dir)
  spec, want = model.spec, presets.get_preset(config.model.preset, channels=int(config.model.channels))
  if (spec.image_size, spec.channels) != (want.image_size, want.channels):
    raise ValueError(
      f"config.model.preset={config.model.preset!r} with config.model.channels={config.model.channels} splits "
      f"{want.image_size}x{want.image_size}x{want.channels} images, but --model {os.fspath(model_dir)!r} "
      f"({spec.name}) takes {spec.image_size}x{spec.image_size}x{spec.channels}: use the autoencoder's config"
    )
  staging = None if split else files.temp_dir_beside(out)
  try:
    data_dir = prepare_data.ensure(config, staging, split) if staging else prepare_data.check_split(config, split)
    record = {**prepare_data.split_record(data_dir), "split": "train"}
    _check_model_split(meta, record, model_dir, data_dir)
    if staging:
      record["dir"] = record["manifest"] = None  # moved into the output folder: <out>/data
      record["kept_as"] = "data"
    image_set = prepare_data.load_split(data_dir, "train")
    source_root = (config.data.root or record["root"]) if config.data.get("source", "folder") == "folder" else None
    trained_on = meta.get("class_names")
    if trained_on and sorted(trained_on) != sorted(image_set.class_names):
      warnings.warn(
        f"the model was trained on classes {trained_on}, the data has {image_set.class_names}", stacklevel=1
      )
    stage.log(f"generate: over-sampling the training split {image_set.counts()} of {data_dir}")
    options = dict(strict=strict, copy_originals=copy_originals, batch_size=batch_size, overwrite=overwrite)
    run = dict(source_root=source_root, model_path=model_dir, data_split=record)
    run["extra_dirs"] = {"data": data_dir} if staging else None
    return generate_dataset(model, image_set, out, **oversampling(config), **options, **run)
  finally:
    if staging is not None:
      shutil.rmtree(staging, ignore_errors=True)


def _check_model_split(meta: dict, record: dict, model_dir, data_dir) -> None:
  """The autoencoder's recorded training split (if any) is the split being over-sampled."""
  trained = meta.get("data_split") or {}
  if trained.get("manifest_digest") and trained["manifest_digest"] != record["manifest_digest"]:
    raise ValueError(
      f"--model {os.fspath(model_dir)!r} was trained on the split in {trained.get('dir')!r}, not on the split of "
      f"{os.fspath(data_dir)!r} (its test images may be in the model's training data): pass --split "
      f"{trained.get('dir')!r} or the same config"
    )


def _encode(model, image_set: ImageSet, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(class name of each image, its checked eval-mode code), encoded `_CHUNK_BATCHES` batches at a time.

  Every batch has `min(batch_size, N)` images, the last one padded with its last image, as one
  `encode_images` call over all N would make them: the codes are the same as that call's."""
  names = np.asarray(image_set.class_names)[image_set.labels]
  n = len(image_set.labels)
  bs = max(1, min(batch_size, n))
  codes, start = None, 0
  for images in _image_batches(image_set, np.arange(n), bs * _CHUNK_BATCHES):
    m = len(images)
    if m % bs:
      images = np.concatenate([images, np.repeat(images[-1:], bs - m % bs, axis=0)])
    chunk = np.asarray(encode_images(model, images, batch_size=bs))[:m]
    if codes is None:
      codes = np.empty((n,) + chunk.shape[1:], chunk.dtype)
    codes[start : start + m] = chunk
    start += m
  if start != n:
    raise RuntimeError(f"internal error: {start} of {n} images were read for encoding")
  _check_codes(codes, image_set)
  return names, codes


def _model_record(model, model_path) -> dict:
  spec = model.spec
  return {
    "path": os.fspath(model_path) if model_path is not None else None,
    "spec": spec.name,
    "image_size": spec.image_size,
    "channels": spec.channels,
    "latent_dim": spec.latent_dim,
  }


def _sources(copy_originals: str, links, source_root, model: dict, data_split: dict | None) -> dict:
  """Where the folder's images come from: how originals were written, the model, the data split."""
  return dict(
    copy_originals=copy_originals,
    links=links if copy_originals == "link" else None,
    source_root=os.fspath(source_root) if source_root is not None else None,
    model=model,
    data_split={k: v for k, v in data_split.items() if k != "splits"} if data_split else None,
  )


def _summary(out: pathlib.Path, counts: dict, res, written: dict, settings: dict, caught, times: dict) -> dict:
  """The counts, settings, warnings and stage times of one generated folder (`summary.json`)."""
  class_names = list(counts)
  new_counts = res.counts()
  return {
    "out_dir": str(out),
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "counts_before": counts,
    "counts_new": {c: new_counts.get(c, 0) for c in class_names},
    "counts_after": {c: counts[c] + new_counts.get(c, 0) for c in class_names},
    "counts_written": {c: int(written.get(c, 0)) for c in class_names},
    "sampling_strategy": files.json_safe(settings["sampling_strategy"]),
    "targets": files.json_safe(res.targets),
    "kind": settings["kind"],
    "k_neighbors": int(settings["k_neighbors"]),
    "k_used": files.json_safe(res.k_used),
    "strict": bool(settings["strict"]),
    "seed": int(settings["seed"]),
    "synthesis": settings["synthesis"],
    "warnings": [str(w.message) for w in caught],
    "seconds": {**{k: round(v, 3) for k, v in times.items()}, "total": round(sum(times.values()), 3)},
  }


def _resample(codes: np.ndarray, names: np.ndarray, seed: int, **kwargs):
  """Latent SMOTE of the codes; its warnings are returned (for the summary) and re-emitted for the caller."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    res = smote.fit_resample(
      jax.random.key(seed),
      codes,
      names,
      **{**kwargs, "k_neighbors": int(kwargs["k_neighbors"])},
      return_provenance=True,
    )
  for w in caught:
    warnings.warn(str(w.message), w.category, stacklevel=3)
  return res, caught


def _output_paths(originals: list[tuple[str, str | None]], res) -> tuple[list[str], list[str]]:
  """(paths of the originals, paths of the synthetic images) inside the output folder, without clashes."""
  new_counts = res.counts()
  width = max(5, len(str(max(new_counts.values(), default=0))))
  syn_paths, index_in_class = [], {}
  for c in np.asarray(res.labels).astype(str):
    index_in_class[c] = index_in_class.get(c, 0) + 1
    syn_paths.append(os.path.join(c, synthetic_name(c, index_in_class[c], width)))
  orig_paths = _dedupe([p for p, _ in originals])
  clash = {p.lower() for p in orig_paths} & {p.lower() for p in syn_paths}
  if clash:
    raise ValueError(
      f"original file(s) {sorted(clash)[:3]} have the names of synthetic images; is the input "
      "itself a generated folder? Rename them or use copy_originals='none'"
    )
  return orig_paths, syn_paths


def _write_originals(tmp: pathlib.Path, spec, image_set, originals, orig_paths, copy_originals: str, batch_size: int):
  """Copies or links the original files; writes in-memory originals as PNGs, a chunk of images at a time.
  Returns the link counts."""
  class_names = list(image_set.class_names)
  links = {"hard": 0, "sym": 0}
  png_rows = [i for i, (_, src) in enumerate(originals) if src is None]
  for rel, (_, src) in zip(orig_paths, originals):
    if src is None:
      continue
    dst = tmp / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy_originals == "copy":
      shutil.copy2(src, dst)
      continue
    try:
      os.link(src, dst)
      links["hard"] += 1
    except OSError:
      os.symlink(os.path.abspath(src), dst)
      links["sym"] += 1
  chunk = max(1, batch_size) * _CHUNK_BATCHES
  for start, images in zip(range(0, len(png_rows), chunk), _image_batches(image_set, np.asarray(png_rows), chunk)):
    rows = png_rows[start : start + chunk]
    save_image_folder(
      images,
      image_set.labels[rows],
      class_names,
      tmp,
      names=[_within_class(orig_paths[i], class_names[int(image_set.labels[i])]) for i in rows],
    )
  return links


def _write_synthetic(tmp: pathlib.Path, model, image_set, res, syn_paths, batch_size: int, synthesis: str, codes):
  """Decodes and writes the synthetic images chunk by chunk; keeps the first few per class for the grids.
  'residual' synthesis reads each chunk's base images (a streamed set decodes just those files)."""
  class_names = list(image_set.class_names)
  syn_labels = np.asarray(res.labels).astype(str)
  samples = np.asarray(res.samples)
  label_of = {c: i for i, c in enumerate(class_names)}
  grid_rows: dict[str, list[int]] = {}
  for row, c in enumerate(syn_labels):
    if len(grid_rows.setdefault(c, [])) < _GRID_TRIPLETS:
      grid_rows[c].append(row)
  wanted = {r for rows in grid_rows.values() for r in rows}
  grid_images: dict[int, np.ndarray] = {}
  chunk = max(1, batch_size) * _CHUNK_BATCHES
  for start in range(0, len(samples), chunk):
    stop = min(start + chunk, len(samples))
    base = np.asarray(res.base[start:stop])
    images = synthesize(
      model,
      samples[start:stop],
      synthesis=synthesis,
      base_codes=codes[base] if synthesis == "residual" else None,
      base_images=_take(image_set, base) if synthesis == "residual" else None,
      batch_size=batch_size,
      channels=model.spec.channels,
    )
    save_image_folder(
      images,
      [label_of[c] for c in syn_labels[start:stop]],
      class_names,
      tmp,
      names=[os.path.basename(p) for p in syn_paths[start:stop]],
    )
    for r in wanted.intersection(range(start, stop)):
      grid_images[r] = images[r - start]
  for c, rows in grid_rows.items():
    _write_grid(
      tmp / "grids" / f"{c}.png",
      _take(image_set, res.base[rows]),
      np.stack([grid_images[r] for r in rows]),
      _take(image_set, res.neighbor[rows]),
    )


def _manifest_rows(image_set, names: np.ndarray, orig_paths, syn_paths, res, split: str) -> Iterator[dict]:
  """Originals in input order, then the synthetic rows with their base and neighbour source files (made one
  at a time, as they are written); `split`: the data split the originals (and so every base and neighbour)
  belong to ('' unknown)."""
  for i, rel in enumerate(orig_paths):
    yield {
      "file": rel,
      "class": names[i],
      "synthetic": 0,
      "base_file": "",
      "neighbor_file": "",
      "gap": "",
      "source": image_set.files[i],
      "split": split,
    }
  syn_labels = np.asarray(res.labels).astype(str)
  for j, rel in enumerate(syn_paths):
    yield {
      "file": rel,
      "class": syn_labels[j],
      "synthetic": 1,
      "base_file": image_set.files[int(res.base[j])],
      "neighbor_file": image_set.files[int(res.neighbor[j])],
      "gap": f"{float(res.gap[j]):.6f}",
      "source": "",
      "split": split,
    }


def _write_manifest(tmp: pathlib.Path, rows, class_names: list[str], out: pathlib.Path) -> dict[str, int]:
  """Writes manifest.csv row by row, checks that the class folders hold exactly the manifest's files and
  returns the files written per class."""
  listed, written, n_rows = set(), dict.fromkeys(class_names, 0), 0
  with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
    writer.writeheader()
    for row in rows:
      writer.writerow(row)
      listed.add(row["file"])
      written[str(row["class"])] += 1
      n_rows += 1
  on_disk = set()
  for c in class_names:
    for dirpath, _, filenames in os.walk(tmp / c):
      on_disk.update(os.path.relpath(os.path.join(dirpath, n), tmp) for n in filenames)
  if on_disk != listed or len(listed) != n_rows:
    raise RuntimeError(
      f"internal error: files on disk and manifest differ "
      f"({sorted(on_disk ^ listed)[:5]}); nothing was written to {str(out)!r}"
    )
  return written


def _commit(tmp: pathlib.Path, out: pathlib.Path, overwrite: bool) -> pathlib.Path | None:
  """Moves an existing `out` aside, renames `tmp` in; returns the folder holding the old one (to delete)."""
  old = None
  if out.exists():
    if any(out.iterdir()):
      _check_out_dir(out, overwrite)  # it may have been filled meanwhile
      old = pathlib.Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
      os.rename(out, old / "x")
    else:
      out.rmdir()
  os.rename(tmp, out)
  return old


def format_counts(summary: dict) -> str:
  """The before / new / after table of a summary, one class per line."""
  before, new, after = summary["counts_before"], summary["counts_new"], summary["counts_after"]
  width = max([len("class")] + [len(c) for c in before])
  lines = [f"{'class':<{width}}  {'before':>8}  {'new':>8}  {'after':>8}"]
  for c in before:
    lines.append(f"{c:<{width}}  {before[c]:>8}  {new[c]:>8}  {after[c]:>8}")
  lines.append(f"{'total':<{width}}  {sum(before.values()):>8}  {sum(new.values()):>8}  {sum(after.values()):>8}")
  return "\n".join(lines)


def synthetic_files(dataset_dir: pathlib.Path, class_names: list[str]) -> tuple[list[str], np.ndarray]:
  """The synthetic rows of a generated dataset's manifest.csv: their image paths and label indices."""
  rows = list(csv.DictReader((dataset_dir / "manifest.csv").open()))
  synthetic = [row for row in rows if str(row.get("synthetic")) in ("1", "True", "true")]
  paths = [str(dataset_dir / row["file"]) for row in synthetic]
  return paths, np.asarray([class_names.index(row["class"]) for row in synthetic], np.int32)


def read_synthetic(dataset_dir: pathlib.Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """The synthetic images of a generated dataset as uint8 (N, H, W, C) and their label indices."""
  paths, labels = synthetic_files(dataset_dir, class_names)
  if not paths:
    return np.zeros((0, 1, 1, 1), np.uint8), labels
  arrays = [np.asarray(Image.open(p)) for p in paths]
  return np.stack([a[..., None] if a.ndim == 2 else a for a in arrays]), labels
