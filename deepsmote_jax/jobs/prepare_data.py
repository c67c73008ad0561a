"""The data stage: load the images once, split train/validation/test, make the training split scarce in NG.

Every later stage (autoencoder, generation, classifiers, report) and the standalone jobs (`deepsmote
train-autoencoder`, `generate`, `train-classifier`) read these saved splits, so a test image never reaches the
autoencoder or the synthetic set. A standalone job either runs the stage into `<workdir>/data` (`ensure`: reused
while its record is unchanged) or reads the folder of an earlier run (`--split DIR`, `check_split`: its
settings and images must be the config's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib

import numpy as np

from deepsmote_jax import config_lib, files
from deepsmote_jax.data import protocols, splits
from deepsmote_jax.data import tiles as tiles_lib
from deepsmote_jax.data.file_images import FileImages
from deepsmote_jax.data.folder import ImageSet, load_image_folder
from deepsmote_jax.data.sources import load_source, stream_cache_setting
from deepsmote_jax.jobs import stage
from deepsmote_jax.models import presets
from deepsmote_jax.train import loop

SPLITS = ("train", "validation", "test")
MANIFEST = "split_manifest.json"
# The config settings the data stage reads (its record, `record`).
SETTINGS = ("model", "data", "split", "imbalance", "pipeline.positive_class")
# Settings that say where the images are; a --split is checked by the images' fingerprint instead.
_WHERE = ("data.root", "data.test_root")


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
  """Keeps `ok_count` OK images (0: all) and cuts every other class to `minority_ratio` x OK (0: as is); with
  `scarce_classes`, cuts only those (`_make_classes_scarce`)."""
  if tuple(imbalance.get("scarce_classes") or ()):
    return _make_classes_scarce(train, imbalance)
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


def _make_classes_scarce(train: ImageSet, imbalance) -> ImageSet:
  """One or a few defect classes made scarce among several (no single OK class, e.g. NEU-DET): each class of
  `scarce_classes` cut to `minority_ratio` x the mean training count of the other classes (at least 2, never
  more than it has); every other class kept as it is. `ok_class` plays no part in the cut."""
  scarce = [str(c) for c in imbalance.scarce_classes]
  unknown = [c for c in scarce if c not in train.class_names]
  if unknown:
    raise ValueError(
      f"config.imbalance.scarce_classes has unknown class(es) {unknown}; classes of the data: {train.class_names}"
    )
  counts = train.counts()
  rest = [n for c, n in counts.items() if c not in scarce]
  if not rest:
    raise ValueError(
      f"config.imbalance.scarce_classes={scarce} names every class of the data: keep at least one class as it is"
    )
  ratio = float(imbalance.minority_ratio)
  if not ratio > 0:
    raise ValueError(
      f"config.imbalance.minority_ratio={imbalance.minority_ratio!r}: config.imbalance.scarce_classes={scarce} "
      "needs a ratio > 0 (the scarce classes' share of the other classes' mean count)"
    )
  if int(imbalance.ok_count):
    raise ValueError(
      f"config.imbalance.ok_count={imbalance.ok_count!r}: with config.imbalance.scarce_classes every other class "
      "is kept as it is; set ok_count=0"
    )
  keep = max(2, round(ratio * sum(rest) / len(rest)))
  # Classes left out of the mapping are kept whole.
  return protocols.subsample_per_class(train, {c: min(counts[c], keep) for c in scarce}, seed=int(imbalance.seed))


def source_fingerprint(config, image_set: ImageSet | None = None) -> dict:
  """What the data stage reads, summarised so that any change shows: for an image folder every file's
  path, size and modification time (hashed, with counts); for an in-memory set its content hash."""
  test_root = config.data.get("test_root") or ""
  test = {"test_root": _folder_fingerprint(test_root, "config.data.test_root")} if test_root else {}
  if image_set is not None:
    return {
      "in_memory": loop.fingerprint(image_set.images, image_set.labels),
      "classes": image_set.class_names,
      **test,
    }
  return {**_main_fingerprint(config), **test}


def _main_fingerprint(config) -> dict:
  data = config.data
  source = data.get("source", "folder")
  if source == "elpv":
    return {"source": "elpv", "package": importlib.metadata.version("elpv-dataset")}
  if source == "tfds":
    return {"source": "tfds", "name": data.get("name"), "split": data.get("split"), "data_dir": data.get("data_dir")}
  return _folder_fingerprint(data.get("root") or "", "config.data.root")


def _folder_fingerprint(root, setting: str) -> dict:
  """Every file's path, size and modification time under `root`, hashed, with counts."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise ValueError(f"{setting}={str(root)!r} is not a folder")
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


def record(config, image_set: ImageSet | None = None) -> dict:
  """The data stage's record (`stage.py`): the settings it reads and the fingerprint of the image source."""
  rec = {
    "settings": files.json_safe({key: stage.setting(config, key) for key in SETTINGS}),
    "upstream": {},
    "inputs": files.json_safe(source_fingerprint(config, image_set)),
  }
  _drop_unset(config, rec["settings"])
  return rec


def _drop_unset(config, settings: dict) -> None:
  """Leaves settings at their off value out of a record, so that records of runs from before them stay valid,
  and settings that do not change the data stage's output."""
  if tile_settings(config).mode == "none":
    settings["data"].pop("patches", None)
  if not tuple(config.imbalance.get("scarce_classes") or ()):
    settings["imbalance"].pop("scarce_classes", None)
  settings["data"].pop("stream_cache", None)  # where decoded images are kept while streaming, not which images


def ensure(config, workdir: str | os.PathLike, split_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The data-stage folder a standalone job reads: `split_dir` checked against the config (`check_split`), or
  the data stage run into `<workdir>/data` with the config's split rule (reused while its record, settings and
  image files, is unchanged; the same settings and images give the same split)."""
  if split_dir:
    return check_split(config, split_dir)
  out = pathlib.Path(workdir) / "data"
  rec = record(config)
  if stage.is_done(out) and stage.read_record(out) == rec:
    stage.log(f"stage data: the split in {out} is reused (same settings and images)")
    return out
  stage.run_stage(out, lambda d, _: run(config, d), rec)
  return out


def _leaves(tree, prefix: str = "") -> dict:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
  return {prefix: tree}


def check_split(config, split_dir: str | os.PathLike) -> pathlib.Path:
  """`split_dir` (the data stage's folder of an earlier run) when it was made with the config's settings from
  the same images; otherwise a one-line ValueError naming the first setting that differs. With an empty
  `config.data.root` the split is taken as it is (its images are not compared)."""
  d = pathlib.Path(split_dir)
  where = f"--split {str(d)!r}"
  if not (d / MANIFEST).is_file() or not stage.is_done(d):
    raise ValueError(
      f"{where} is not a finished data stage (no {MANIFEST} or {stage.DONE}): give the data folder of an earlier "
      "run, e.g. <train-autoencoder workdir>/data"
    )
  old = stage.read_record(d)
  if not old or "settings" not in old:
    raise ValueError(f"{where} has no record of the settings it was made with (an older version): make it again")
  given = bool(config.data.get("root")) or config.data.get("source", "folder") != "folder"
  new = {
    "settings": files.json_safe({key: stage.setting(config, key) for key in SETTINGS}),
    "inputs": files.json_safe(source_fingerprint(config)) if given else None,
  }
  _drop_unset(config, new["settings"])
  was, now = _leaves(old["settings"]), _leaves(new["settings"])
  for key in sorted(set(was) | set(now)):
    if key in _WHERE or was.get(key) == now.get(key):
      continue
    raise ValueError(
      f"{where} was made with config.{key}={was.get(key)!r}, the config has {now.get(key)!r}: use the same setting "
      "or leave out --split to make a split with this config"
    )
  if given and new["inputs"] != old.get("inputs"):
    before, after = old.get("inputs") or {}, new["inputs"]
    setting = "config.data.root" if "root" in after else "config.data.source"
    raise ValueError(
      f"{where} was made from other images than {setting}={after.get('root') or after.get('source')!r} holds now "
      f"(made from {before.get('root', before.get('source'))!r}, {before.get('files', '?')} files; now "
      f"{after.get('files', '?')} files): leave out --split to split these images"
    )
  classes = list(json.loads((d / MANIFEST).read_text()).get("class_names") or [])
  wanted = list(config.data.get("classes") or ())
  if wanted and sorted(wanted) != sorted(classes):
    raise ValueError(f"{where} has classes {classes}, config.data.classes={wanted}")
  pos = config.pipeline.positive_class
  if pos and pos not in classes:
    raise ValueError(f"{where} has classes {classes}: no config.pipeline.positive_class={pos!r}")
  stage.log(f"stage data: using the split in {d}")
  return d


def split_record(data_dir: str | os.PathLike) -> dict:
  """What a job built on a data-stage folder records of it: its path, the digest of its manifest, the root
  its files are relative to (None: not an image folder) and the file lists of every split."""
  d = pathlib.Path(data_dir)
  raw = (d / MANIFEST).read_bytes()
  doc = json.loads(raw)
  inputs = (stage.read_record(d) or {}).get("inputs") or {}
  return {
    "dir": str(d.resolve()),
    "manifest": str((d / MANIFEST).resolve()),
    "manifest_digest": hashlib.sha256(raw).hexdigest()[:16],
    "root": inputs.get("root"),
    "splits": doc.get("splits", {}),
  }


def run(config, out: pathlib.Path, image_set: ImageSet | None = None) -> dict:
  """Writes `<out>/{train,validation,test}.npz`, `split_manifest.json` and `skipped.json` (inputs left
  out with `data.on_error='skip'`, with reasons); returns the class counts and the number skipped.
  With `config.data.patches.mode` 'tiles' / 'defect_crops' the splits hold tiles (`run_tiled`)."""
  settings = tile_settings(config)
  if settings.mode != "none":
    return run_tiled(config, out, settings, image_set)
  ds = load_images(config, image_set)
  parts = _splits(config, ds)
  separate = parts["test"] if config.data.get("test_root") else None
  skipped = ds.skipped + (separate.skipped if separate else [])
  notes = ds.notes + (separate.notes if separate else [])
  files.atomic_write_json(out / "skipped.json", [{"file": f, "reason": r} for f, r in skipped])
  files.atomic_write_json(out / "input_notes.json", [{"file": f, "note": n} for f, n in notes])
  empty = [c for c, n in parts["train"].counts().items() if n == 0]
  if empty:
    raise ValueError(
      f"class(es) {empty} have no training image after the split (config.split.ratios={tuple(config.split.ratios)}, "
      f"{ds.counts()} images in all): add images or remove the class"
    )
  for name in SPLITS:
    save_split(out / f"{name}.npz", parts[name])
  splits.save_manifest(parts, out / "split_manifest.json")
  return {
    "class_names": parts["train"].class_names,
    "counts": {n: parts[n].counts() for n in SPLITS},
    "skipped": len(skipped),
    "converted_with_notes": len(notes),
  }


def _splits(config, ds: ImageSet) -> dict[str, ImageSet]:
  """train/validation/test of `ds`, the training split made scarce (`make_scarce`); with
  `config.data.test_root`, train/validation of `ds` (their ratios renormalised) and the test split loaded
  from that folder alone."""
  ratios = tuple(config.split.ratios)
  if len(ratios) != 3:
    raise ValueError(f"config.split.ratios must be (train, validation, test), got {ratios}")
  parts = _split(config, ds, ratios)
  parts["train"] = make_scarce(parts["train"], config.imbalance)
  return parts


def _split(config, ds: ImageSet, ratios: tuple) -> dict[str, ImageSet]:
  group = config.split.group_pattern or None
  test_root = config.data.get("test_root") or ""
  if not test_root:
    return splits.split_image_set(ds, ratios, seed=int(config.split.seed), group_pattern=group, names=SPLITS)
  if ratios[0] + ratios[1] <= 0:
    raise ValueError(f"config.split.ratios={ratios}: train + validation must be > 0")
  two = (ratios[0] / (ratios[0] + ratios[1]), ratios[1] / (ratios[0] + ratios[1]))
  parts = splits.split_image_set(ds, two, seed=int(config.split.seed), group_pattern=group, names=SPLITS[:2])
  parts["test"] = load_test_folder(config, test_root, ds)
  return parts


def load_test_folder(config, root: str, train: ImageSet) -> ImageSet:
  """The separate test folder at the training images' size, labelled with the training class indices."""
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise ValueError(f"config.data.test_root={root!r} is not a folder")
  present = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
  unknown = [c for c in present if c not in train.class_names]
  if unknown:
    raise ValueError(
      f"config.data.test_root: class folder {os.path.join(root, unknown[0])!r} is not a class of the training "
      f"data {train.class_names}"
    )
  pos = config.pipeline.positive_class
  if pos and pos not in present:
    raise ValueError(f"config.data.test_root={root!r} has no {pos!r} folder (config.pipeline.positive_class)")
  size, channels = train.images.shape[1], train.images.shape[3]
  classes = [c for c in train.class_names if c in present]
  data = config.data
  test = load_image_folder(
    root,
    image_size=size,
    channels=channels,
    resize=data.get("resize", "resize"),
    on_error=data.get("on_error", "raise"),
    min_per_class=1,
    classes=classes,
  )
  labels = np.array([train.class_names.index(test.class_names[i]) for i in test.labels], np.int32)
  return ImageSet(
    images=test.images,
    labels=labels,
    class_names=list(train.class_names),
    files=[f"test_root/{f}" for f in test.files],
    skipped=[(f"test_root/{f}", r) for f, r in test.skipped],
    notes=[(f"test_root/{f}", n) for f, n in test.notes],
  )


def save_split(path: pathlib.Path, s: ImageSet) -> None:
  """The split's images (or, streamed, the paths of its files and how to decode them), labels and names."""
  pixels = {"images": s.images}
  if s.streamed:
    pixels = {"paths": np.array(s.images.paths, dtype=object), "decoding": json.dumps(s.images.settings())}
  np.savez(
    path,
    **pixels,
    labels=s.labels,
    files=np.array(s.files, dtype=object),
    class_names=np.array(s.class_names, dtype=object),
  )


def load_split(data_dir: pathlib.Path, name: str, *, stream_cache: str = "disk") -> ImageSet:
  """One split saved by `run` (`name` in train / validation / test); a streamed one as `FileImages` keeping
  the images it decodes in `stream_cache` (`data.file_images.check_stream_cache`)."""
  with np.load(pathlib.Path(data_dir) / f"{name}.npz", allow_pickle=True) as z:
    if "paths" in z:
      decoding = json.loads(str(z["decoding"]))
      images = FileImages(list(z["paths"]), root=None, **decoding, stream_cache=stream_cache)
    else:
      images = z["images"]
    return ImageSet(
      images=images, labels=z["labels"], class_names=list(z["class_names"]), files=list(z["files"]), skipped=[]
    )


def training_split(config, data_dir: pathlib.Path) -> ImageSet:
  """The saved training split, streamed with `config.data.stream_cache` (the setting is not part of the data
  stage: it changes where decoded images are kept, not the images)."""
  return load_split(data_dir, "train", stream_cache=stream_cache_setting(config.data))


def tile_settings(config) -> tiles_lib.TileSettings:
  """`config.data.patches` checked (errors name `config.data.patches.<key>`); mode 'none' when absent."""
  section = config.data.get("patches")
  if section is None:
    return tiles_lib.TileSettings()
  ts = config_lib.to_dataclass(tiles_lib.TileSettings, section, "data.patches")
  if ts.mode == "none":
    return ts
  if config.data.get("source", "folder") != "folder":
    raise ValueError(
      f"config.data.patches.mode={ts.mode!r} cuts tiles from image files: it needs config.data.source='folder', "
      f"got {config.data.get('source')!r}"
    )
  for key in ("pipeline.positive_class", "imbalance.ok_class"):
    section, name = key.split(".")
    if not config[section][name]:
      raise ValueError(f"config.{key} is empty: config.data.patches.mode={ts.mode!r} scores NG against OK per image")
  return ts


def run_tiled(config, out: pathlib.Path, settings: tiles_lib.TileSettings, image_set: ImageSet | None = None) -> dict:
  """The data stage for tiles: the images split as in mode 'none' (by image and group, so all tiles of an
  image share one split), then each split's images cut into tiles at native resolution (`data/tiles.py`)
  and saved with their image index (`load_tiled_split`); `split_manifest.json` lists the images."""
  if image_set is not None:
    raise ValueError(
      f"config.data.patches.mode={settings.mode!r} cuts tiles from the files of config.data.root, "
      "not from an in-memory image set"
    )
  ds = load_images(config)  # whole images at the model's size: the same images and split as mode 'none'
  pos, ok = config.pipeline.positive_class, config.imbalance.ok_class
  if sorted(ds.class_names) != sorted({pos, ok}):
    raise ValueError(
      f"config.data.patches.mode={settings.mode!r} scores config.pipeline.positive_class={pos!r} against "
      f"config.imbalance.ok_class={ok!r}, but the data has classes {ds.class_names}: choose two with "
      "config.data.classes"
    )
  parts = _splits(config, ds)
  spec = presets.get_preset(config.model.preset, channels=int(config.model.channels))
  skipped, kept, info = list(ds.skipped), {}, {}
  for name in SPLITS:
    split, lost = _cut_split(config, parts[name], settings, spec, name, ds.class_names.index(pos))
    skipped += lost
    tiles_lib.save_split(out / f"{name}.npz", split)
    names = set(split.image_files)
    kept[name] = parts[name].subset([i for i, f in enumerate(parts[name].files) if f in names])
    info[name] = {"images": split.image_counts(), "tiles": len(split.tiles), "ng_instances": int(split.instance.sum())}
  empty = [c for c, n in info["train"]["images"].items() if n == 0]
  if empty:
    raise ValueError(
      f"class(es) {empty} have no training image after the split and tiling "
      f"(config.split.ratios={tuple(config.split.ratios)}, "
      f"{ds.counts()} images in all, skipped ones in data/skipped.json): add images or remove the class"
    )
  files.atomic_write_json(out / "skipped.json", [{"file": f, "reason": r} for f, r in skipped])
  files.atomic_write_json(out / "input_notes.json", [{"file": f, "note": n} for f, n in ds.notes])
  splits.save_manifest(kept, out / "split_manifest.json", tiles={n: info[n]["tiles"] for n in SPLITS})
  size = settings.tile_size(spec.image_size)
  return {
    "class_names": ds.class_names,
    "counts": {n: info[n]["images"] for n in SPLITS},
    "tiles": {n: {k: v for k, v in info[n].items() if k != "images"} for n in SPLITS},
    "tile_settings": {"mode": settings.mode, "size": size, "stride": settings.tile_stride(spec.image_size)},
    "skipped": len(skipped),
    "converted_with_notes": len(ds.notes),
  }


def _cut_split(config, images: ImageSet, settings, spec, name: str, positive: int):
  """Tiles of one split's images; images of a separate test folder (`test_root/<file>`) come from there."""
  root, prefix = config.data.root, ""
  if name == "test" and config.data.get("test_root"):
    root, prefix = config.data.test_root, "test_root/"
    images = dataclasses.replace(images, files=[f.removeprefix(prefix) for f in images.files])
  split, lost = tiles_lib.load_split(
    root,
    images,
    settings,
    image_size=spec.image_size,
    channels=spec.channels,
    train=name == "train",
    positive=positive,
    on_error=config.data.get("on_error", "raise"),
    seed=int(config.split.seed),
  )
  if prefix:
    split.image_files = [prefix + f for f in split.image_files]
    split.tiles.files = [prefix + f for f in split.tiles.files]
    lost = [(prefix + f, r) for f, r in lost]
  return split, lost


def load_tiled_split(data_dir: pathlib.Path, name: str) -> tiles_lib.TiledSplit:
  """One tiled split saved by `run_tiled` (tiles, their image index, NG-instance flags, the images)."""
  return tiles_lib.load_saved_split(pathlib.Path(data_dir) / f"{name}.npz")
