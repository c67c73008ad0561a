"""Exported encoder/decoder: a directory other scripts load by path.

Layout: `meta.json` (format version, the layer table, compute dtype, class names, anything the caller adds)
and `arrays/` (an Orbax checkpoint of the parameters and BatchNorm statistics). Written atomically: the
directory is complete or absent.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import jax.numpy as jnp
from flax import nnx

from deepsmote_jax.models import presets
from deepsmote_jax.models.autoencoder import Autoencoder
from deepsmote_jax.models.classifiers import build_classifier
from deepsmote_jax.models.presets import AutoencoderSpec, ConvSpec
from deepsmote_jax.train import loop
from deepsmote_jax.train.checkpoint import load_tree, read_meta, save_tree

FORMAT = "deepsmote_jax.autoencoder/1"


def spec_to_dict(spec: AutoencoderSpec) -> dict:
  return dataclasses.asdict(spec)


def spec_from_dict(d: dict) -> AutoencoderSpec:
  return AutoencoderSpec(
    name=d["name"],
    image_size=int(d["image_size"]),
    channels=int(d["channels"]),
    latent_dim=int(d["latent_dim"]),
    encoder=tuple(ConvSpec(**c) for c in d["encoder"]),
    decoder_input=tuple(d["decoder_input"]),
    decoder=tuple(ConvSpec(**c) for c in d["decoder"]),
    out_channels=d.get("out_channels"),
  )


def export_autoencoder(
  model: Autoencoder, path: str | os.PathLike, *, class_names: list[str] | None = None, extra: dict | None = None
) -> pathlib.Path:
  """Saves `model` (parameters + BatchNorm statistics + layer table) to the directory `path`."""
  _, params, stats = loop.split_model(model)
  dtype, edge_dtype = jnp.dtype(model.encoder.dtype).name, jnp.dtype(model.encoder.edge_dtype).name
  meta = {
    "format": FORMAT,
    "spec": spec_to_dict(model.spec),
    "dtype": dtype,
    **({"edge_dtype": edge_dtype} if edge_dtype != dtype else {}),
    "class_names": list(class_names) if class_names is not None else None,
    **(extra or {}),
  }
  return save_tree(path, {"params": params, "batch_stats": stats}, meta=meta)


def load_autoencoder(path: str | os.PathLike, *, dtype=None) -> tuple[Autoencoder, dict]:
  """Loads an exported encoder/decoder; returns (model, meta). `dtype` overrides the compute dtype (of every
  layer, the edge layers' included)."""
  path = pathlib.Path(path)
  meta = read_meta(path)
  if meta.get("format") != FORMAT:
    raise ValueError(
      f"{path} is not an exported deepsmote_jax autoencoder (meta.json format "
      f"{meta.get('format')!r}, expected {FORMAT!r})"
    )
  try:
    spec = spec_from_dict(meta["spec"])
    presets.validate(spec)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}/meta.json: the layer table is damaged ({type(e).__name__}: {e})") from None
  # Shapes only: the weights come from the file, so no random initialisation is computed.
  if dtype is None:  # as trained; exports from before `edge_dtype` have one dtype throughout
    dtype, edge_dtype = jnp.dtype(meta["dtype"]), jnp.dtype(meta.get("edge_dtype", meta["dtype"]))
  else:
    edge_dtype = dtype
  model = nnx.eval_shape(lambda: Autoencoder(spec, dtype=dtype, edge_dtype=edge_dtype, rngs=nnx.Rngs(0)))
  graphdef, params, stats = loop.split_model(model)
  tree, _ = load_tree(path, like={"params": params, "batch_stats": stats})
  return loop.merge_model(graphdef, tree["params"], tree["batch_stats"]), meta


CLASSIFIER_FORMAT = "deepsmote_jax.classifier/1"


def export_classifier(
  model,
  path: str | os.PathLike,
  *,
  name: str,
  class_names: list[str],
  image_size: int,
  in_channels: int,
  kwargs: dict | None = None,
  extra: dict | None = None,
) -> pathlib.Path:
  """Saves a registry classifier with what is needed to rebuild it (name, classes, input size, channels)."""
  _, params, stats = loop.split_model(model)
  meta = {
    "format": CLASSIFIER_FORMAT,
    "name": name,
    "class_names": list(class_names),
    "image_size": int(image_size),
    "in_channels": int(in_channels),
    "kwargs": kwargs or {},
    **(extra or {}),
  }
  return save_tree(path, {"params": params, "batch_stats": stats}, meta=meta)


def load_classifier(
  path: str | os.PathLike, *, expect_name: str | None = None, expect_classes: list[str] | None = None
):
  """Loads an exported classifier; returns (model, meta). Checks architecture and classes if given."""
  path = pathlib.Path(path)
  meta = read_meta(path)
  if meta.get("format") != CLASSIFIER_FORMAT:
    raise ValueError(f"{path} is not an exported classifier (format {meta.get('format')!r})")
  if expect_name is not None and meta["name"] != expect_name:
    raise ValueError(f"{path} holds a {meta['name']!r} classifier, not {expect_name!r}")
  if expect_classes is not None and list(expect_classes) != meta["class_names"]:
    raise ValueError(f"{path} was trained on classes {meta['class_names']}, but the data has {list(expect_classes)}")
  abstract = nnx.eval_shape(
    lambda: build_classifier(meta["name"], len(meta["class_names"]), in_channels=meta["in_channels"], **meta["kwargs"])
  )
  graphdef, params, stats = loop.split_model(abstract)
  tree, _ = load_tree(path, like={"params": params, "batch_stats": stats})
  return loop.merge_model(graphdef, tree["params"], tree["batch_stats"]), meta
