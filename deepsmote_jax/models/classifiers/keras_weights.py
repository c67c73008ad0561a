"""Keras weights into the Flax twins of `keras.applications` models, all or nothing.

`read_keras_weights` turns a built Keras model, a `.keras` file, a Keras 3 `.weights.h5` file or a legacy
(Keras 2, or `model.save('x.h5')`) HDF5 file into `{layer name: [arrays in Keras variable order]}`.
`load_keras_weights` matches those layers to the model's `keras_layers()`, checks every tensor and copies only
when all of them fit: on any error the model is left exactly as it was, and the error names every tensor that
does not fit. Each architecture only says how its modules map to Keras layer names (`KerasApplication`).

Keras (and TensorFlow) are imported only for `.keras` files and for `.weights.h5` files written before Keras
stored layer names; h5py only for HDF5 files.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from deepsmote_jax.models.classifiers.common import ClassifierHead

KERAS_TOP = "predictions"  # the classifier Dense of every keras.applications model
_SKIP_TOP_HINT = " (pass skip_top=True to load only the backbone)"


class WeightMismatchError(ValueError):
  """A weight source does not fit the model; the message lists every mismatched tensor."""


# ------------------------------------------------------------------------------ how models name their layers


class Target(NamedTuple):
  """One Keras variable of a layer and the Flax variable it is copied into."""

  name: str  # Keras variable name: 'kernel', 'gamma', 'moving_mean', ...
  variable: nnx.Variable
  depthwise: bool = False  # Keras stores depthwise kernels as (kh, kw, C, 1), Flax as (kh, kw, 1, C)

  def keras_shape(self) -> tuple[int, ...]:
    shape = tuple(self.variable.get_value().shape)
    return shape[:2] + (shape[3], shape[2]) if self.depthwise else shape


class KerasLayer(NamedTuple):
  """A weight-carrying Keras layer of the model.

  `auto`: Keras named the layer automatically (`conv2d`, `conv2d_1`, ...; `name` is then that prefix); such
  layers are matched in creation (numeric suffix) order. `targets=None`: the Keras model has the layer but this
  configuration does not use it (it is neither required nor reported). `top`: left alone with `skip_top`.
  """

  name: str
  targets: tuple[Target, ...] | None
  auto: bool = False
  top: bool = False


def conv_layer(name: str, conv: nnx.Conv, *, auto: bool = False, depthwise: bool = False) -> KerasLayer:
  """`Conv2D` (or `DepthwiseConv2D` with `depthwise=True`): kernel[, bias]."""
  targets = [Target("kernel", conv.kernel, depthwise)]
  if conv.bias is not None:
    targets.append(Target("bias", conv.bias))
  return KerasLayer(name, tuple(targets), auto)


def separable_layer(name: str, depthwise: nnx.Conv, pointwise: nnx.Conv) -> KerasLayer:
  """`SeparableConv2D`: depthwise_kernel, pointwise_kernel[, bias]."""
  targets = [Target("depthwise_kernel", depthwise.kernel, True), Target("pointwise_kernel", pointwise.kernel)]
  if pointwise.bias is not None:
    targets.append(Target("bias", pointwise.bias))
  return KerasLayer(name, tuple(targets))


def bn_layer(name: str, bn: nnx.BatchNorm, *, auto: bool = False) -> KerasLayer:
  """`BatchNormalization`: [gamma,] [beta,] moving_mean, moving_variance."""
  pairs = (("gamma", bn.scale), ("beta", bn.bias), ("moving_mean", bn.mean), ("moving_variance", bn.var))
  return KerasLayer(name, tuple(Target(n, v) for n, v in pairs if v is not None), auto)


def head_layers(head: ClassifierHead) -> Iterator[KerasLayer]:
  """The 'predictions' Dense, when the model has one."""
  if head.dense is not None:
    yield KerasLayer(KERAS_TOP, (Target("kernel", head.dense.kernel), Target("bias", head.dense.bias)), top=True)


class KerasApplication:
  """Mixed into the Flax twin of a `keras.applications` model: what `load_keras_weights` needs to know."""

  keras_name: str  # the keras.applications constructor, e.g. 'ResNet50'
  min_size: int  # the smallest input height/width Keras accepts

  def keras_layers(self) -> Iterator[KerasLayer]:
    """Every weight-carrying Keras layer of this configuration (auto-named ones in Keras creation order)."""
    raise NotImplementedError

  def keras_source_errors(self, weights: KerasWeights) -> list[str]:  # pylint: disable=unused-argument
    """Mismatches beyond tensor shapes (e.g. a weightless layer the model lacks); none by default."""
    return []


# ------------------------------------------------------------------------------------------- reading


@dataclasses.dataclass
class KerasWeights:
  """Weight-carrying Keras layers by name, each with its arrays in Keras variable order."""

  label: str  # where the weights came from, for messages
  layers: dict[str, list[np.ndarray]]
  rescaling_layers: int | None = None  # Rescaling layers in the graph; known for Keras models only


def _text(s) -> str:
  return s.decode() if isinstance(s, bytes) else str(s)


def _flat_layers(model) -> Iterator[Any]:
  for layer in model.layers:
    if hasattr(layer, "layers"):  # a nested Functional / Sequential model
      yield from _flat_layers(layer)
    else:
      yield layer


def _from_model(model, label: str) -> KerasWeights:
  layers, rescaling = {}, 0
  for layer in _flat_layers(model):
    rescaling += type(layer).__name__ == "Rescaling"
    if layer.weights:
      layers[layer.name] = [np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in layer.weights]
  return KerasWeights(label, layers, rescaling)


def _from_legacy_h5(f) -> dict[str, list[np.ndarray]]:
  group = f["model_weights"] if "model_weights" in f else f
  layers = {}
  for name in map(_text, group.attrs["layer_names"]):
    weight_names = [_text(n) for n in group[name].attrs.get("weight_names", [])]
    if weight_names:
      layers[name] = [np.asarray(group[name][n]) for n in weight_names]
  return layers


def _snake_case(name: str) -> str:
  """Keras' `to_snake_case`, which names the layer groups of `.weights.h5` files."""
  name = re.sub(r"\W+", "", name)
  name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
  return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _group_keys(model) -> dict[str, str]:
  """`.weights.h5` group key (snake-case class name, numbered per class) -> layer name."""
  keys, seen = {}, collections.Counter()
  for layer in model.layers:
    key = _snake_case(type(layer).__name__)
    keys[f"{key}_{seen[key]}" if seen[key] else key] = layer.name
    seen[key] += 1
  return keys


def _from_keras3_h5(group, reference: Callable[[], Any] | None) -> dict[str, list[np.ndarray]]:
  layers, keys = {}, None
  for key in group:
    entry = group[key]
    if "layers" in entry:  # a nested model
      layers.update(_from_keras3_h5(entry["layers"], reference))
      continue
    variables = entry.get("vars")
    if variables is None or not len(variables):
      continue
    name = variables.attrs.get("name")
    if name is None:  # written before Keras stored layer names: map the class-keyed group by position
      if keys is None:
        keys = _group_keys(reference()) if reference is not None else {}
      name = keys.get(key, key)
    layers[_text(name)] = [np.asarray(variables[str(i)]) for i in range(len(variables))]
  return layers


def read_keras_weights(source, *, reference: Callable[[], Any] | None = None) -> KerasWeights:
  """Reads a built Keras model or a `.keras` / `.weights.h5` / legacy `.h5` file.

  `reference()` builds a Keras model of the same architecture; it is only called for `.weights.h5` files
  without stored layer names, whose groups are keyed by class name and position.
  """
  if not isinstance(source, (str, os.PathLike)):
    return _from_model(source, f"Keras model {getattr(source, 'name', '?')!r}")
  path = os.fspath(source)
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if path.endswith(".keras"):
    import keras  # pylint: disable=g-import-not-at-top

    return _from_model(keras.saving.load_model(path, compile=False), path)
  import h5py  # pylint: disable=g-import-not-at-top

  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ValueError(f"{path}: not a .keras file or a Keras HDF5 weight file") from e
  with f:
    if "layer_names" in f.attrs or "model_weights" in f:
      return KerasWeights(path, _from_legacy_h5(f))
    if "layers" in f:
      return KerasWeights(path, _from_keras3_h5(f["layers"], reference))
  raise ValueError(f"{path}: not a Keras weight file (no 'layers', 'model_weights' or 'layer_names')")


def _keras_reference(model: KerasApplication):
  """The Keras counterpart of `model` (weights=None, smallest input); imports Keras."""
  import keras  # pylint: disable=g-import-not-at-top

  build = getattr(keras.applications, model.keras_name)
  return build(
    weights=None,
    input_shape=(model.min_size, model.min_size, model.in_channels),
    classes=model.num_classes,
    classifier_activation=None,
  )


# ------------------------------------------------------------------------------------------- copying


def _suffix(name: str) -> int:
  m = re.search(r"_(\d+)$", name)
  return int(m.group(1)) if m else 0


def _auto_named(names, prefix: str) -> list[str]:
  """Layers Keras named automatically (`conv2d`, `conv2d_1`, ...) in creation (numeric suffix) order."""
  pattern = re.compile(rf"^{prefix}(_\d+)?$")
  return sorted((n for n in names if pattern.match(n)), key=_suffix)


class _Staging:
  """Source tensors checked against the model's layers; applied only when every one fits."""

  def __init__(self, arch: str, weights: KerasWeights, *, skip_top: bool):
    self.arch, self.weights, self.skip_top = arch, weights, skip_top
    self.errors: list[str] = []
    self.assignments: list[tuple[nnx.Variable, np.ndarray]] = []
    self.used: set[str] = set()
    self.skipped: list[str] = []

  def resolve(self, layers: list[KerasLayer]) -> list[str]:
    """The source name of each layer: auto-named ones take `prefix`, `prefix_1`, ... of the source in order."""
    wanted = collections.Counter(layer.name for layer in layers if layer.auto)
    found = {prefix: _auto_named(self.weights.layers, prefix) for prefix in wanted}
    for prefix, n in wanted.items():
      used = any(l.targets is not None for l in layers if l.auto and l.name == prefix)
      if len(found[prefix]) != n and used:
        self.errors.append(f"{self.weights.label} has {len(found[prefix])} {prefix} layers, {self.arch} has {n}")
        self.errors += [f"{name}: extra layer in {self.weights.label}" for name in found[prefix][n:]]
      self.used.update(found[prefix][n:])
    names, position = [], collections.Counter()
    for layer in layers:
      if not layer.auto:
        names.append(layer.name)
        continue
      i, candidates = position[layer.name], found[layer.name]
      position[layer.name] += 1
      names.append(candidates[i] if i < len(candidates) else f"{layer.name} #{i} (absent)")
    return names

  def stage(self, layer: KerasLayer, name: str) -> None:
    """Stages the tensors of `layer` (called `name` in the source) or records why they do not fit."""
    self.used.add(name)
    if layer.targets is None:
      return
    if layer.top and self.skip_top:
      if name in self.weights.layers:
        self.skipped.append(name)
      return
    arrays = self.weights.layers.get(name)
    if arrays is None:
      self.errors += [f"{name}/{t.name}: not found in {self.weights.label}" for t in layer.targets]
      return
    if len(arrays) != len(layer.targets):
      self.errors.append(
        f"{name}: weight file has {len(arrays)} tensor(s) {[tuple(a.shape) for a in arrays]}, "
        f"model expects {len(layer.targets)} ({', '.join(t.name for t in layer.targets)})"
      )
      return
    for target, array in zip(layer.targets, arrays):
      if tuple(array.shape) != target.keras_shape():
        self.errors.append(
          f"{name}/{target.name}: weight file has shape {tuple(array.shape)}, model expects "
          f"{target.keras_shape()}{_SKIP_TOP_HINT if layer.top else ''}"
        )
        continue
      if target.depthwise:
        array = np.transpose(array, (0, 1, 3, 2))
      self.assignments.append((target.variable, np.asarray(array, target.variable.get_value().dtype)))

  def leftovers(self) -> None:
    """Source layers the model has no counterpart for: skipped with `skip_top`, errors otherwise."""
    for name, arrays in self.weights.layers.items():
      if name in self.used:
        continue
      if self.skip_top:
        self.skipped.append(name)
      elif name == KERAS_TOP:
        self.errors.append(
          f"{name}: weight file has shapes {[tuple(a.shape) for a in arrays]}, but the model has "
          f"include_top=False{_SKIP_TOP_HINT}"
        )
      else:
        self.errors.append(f"{name}: in {self.weights.label} but not in the {self.arch} model{_SKIP_TOP_HINT}")

  def check(self) -> None:
    if self.errors:
      raise WeightMismatchError(
        f"{len(self.errors)} tensor(s) from {self.weights.label} do not match the model:\n  " + "\n  ".join(self.errors)
      )


def _still_abstract(model: nnx.Module, assignments) -> list[str]:
  """Variables (RNG state aside) that stay `ShapeDtypeStruct`s after loading an `nnx.eval_shape` model."""
  staged = {id(variable) for variable, _ in assignments}
  return [
    "/".join(map(str, path))
    for path, node in nnx.iter_graph(model)
    if isinstance(node, nnx.Variable)
    and not isinstance(node, nnx.RngState)
    and id(node) not in staged
    and isinstance(node.get_value(), jax.ShapeDtypeStruct)
  ]


def _warn_skipped(model: KerasApplication, staging: _Staging, *, has_top: bool) -> None:
  """Says which source layers `skip_top` left out and that the model's own head keeps its values."""
  notes = []
  if staging.skipped:
    notes.append("not loaded: " + ", ".join(sorted(staging.skipped, key=lambda n: n != KERAS_TOP)))
  if has_top:
    notes.append(f"the {model.num_classes}-class head keeps its initialisation")
  if notes:
    warnings.warn(
      f"{model.keras_name}: skip_top=True loading {staging.weights.label}; " + "; ".join(notes), stacklevel=3
    )


def load_keras_weights(model: KerasApplication, source, *, skip_top: bool = False) -> int:
  """Copies Keras weights into `model`; returns the number of tensors copied.

  `source`: a built Keras model of the same architecture, or a `.keras` / `.weights.h5` / legacy `.h5` file
  (e.g. the keras.applications ImageNet downloads). Every kernel, bias, BatchNorm gamma/beta/moving statistic
  (and EfficientNet's input Normalization) is matched by Keras layer name. All or nothing: a source that does
  not fit raises `WeightMismatchError` naming every mismatched, missing or extra tensor, and the model is left
  unchanged. With `skip_top=True` the 'predictions' layer and any other layer without a counterpart (e.g. a new
  head) are not loaded, for a model with `include_top=False` or another number of classes; a warning lists them.

  A model built with `nnx.eval_shape` loads without paying for a random initialisation, but then every
  variable must come from the source (no skipped head, no InceptionV3 aux head): otherwise `ValueError`.
  """
  if not isinstance(model, KerasApplication):
    raise TypeError(f"{type(model).__name__} has no keras.applications counterpart to load weights from")
  weights = read_keras_weights(source, reference=functools.partial(_keras_reference, model))
  staging = _Staging(model.keras_name, weights, skip_top=skip_top)
  staging.errors += model.keras_source_errors(weights)
  layers = list(model.keras_layers())
  for layer, name in zip(layers, staging.resolve(layers)):
    staging.stage(layer, name)
  staging.leftovers()
  staging.check()
  if skip_top:
    _warn_skipped(model, staging, has_top=any(layer.top for layer in layers))
  abstract = _still_abstract(model, staging.assignments)
  if abstract:
    raise ValueError(
      f"{len(abstract)} variable(s) are still abstract (the model was built with nnx.eval_shape) "
      f"and get no value from {weights.label}: {', '.join(abstract[:8])}"
      f"{' ...' if len(abstract) > 8 else ''}; nothing was loaded; build the model concretely to "
      "keep an initialised head"
    )
  for variable, array in staging.assignments:
    variable.set_value(array)
  return len(staging.assignments)
