"""ResNet50 in Flax NNX, layer for layer equal to `keras.applications.ResNet50`.

The Keras graph has no preprocessing inside the model (Keras' 'caffe' `preprocess_input` runs outside it),
so this model takes exactly what the Keras model takes. Feed [-1, 1] images as they are when training from
scratch; for ImageNet weights apply the Keras preprocessing first.

Also holds the Keras weight-reading helpers shared with `efficientnet.py`: `read_keras_source` turns a
built Keras model, a `.keras` file, a Keras 3 `.weights.h5` file or a legacy (Keras 2) `.h5` file into
`{layer name: [arrays]}`, and `copy_keras_layers` copies those into the Flax modules through `Assigner`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepsmote_jax.models.classifiers._keras import Assigner

BN_EPSILON = 1.001e-5
BN_MOMENTUM = 0.99
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (bottleneck filters, blocks, first stride)

# (Keras layer name, kind, module, is_top): kind is 'conv', 'dwconv', 'bn', 'dense' or 'norm'.
KerasLayer = tuple[str, str, nnx.Module, bool]


def param_count(model: nnx.Module) -> int:
  """Counts every tensor Keras' `count_params` counts: parameters, BN moving statistics, Normalization stats.

  Works on abstract models too (`nnx.eval_shape(lambda: ResNet50(...))`).
  """
  state = nnx.state(model, nnx.Not(nnx.RngState))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(state))


# --------------------------------------------------------------------------------------------- layers


def batch_norm(features: int, *, epsilon: float, dtype: Any, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """Keras-equivalent BatchNorm: float32 parameters/statistics and float32 reductions, output in `dtype`.

  Two-pass batch variance (`use_fast_variance=False`), as Keras' `moments`.
  """
  return nnx.BatchNorm(features, momentum=BN_MOMENTUM, epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32,
                       use_fast_variance=False, rngs=rngs)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Spatial mean of an NHWC map, accumulated in float32, returned in the input dtype."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)


class Bottleneck(nnx.Module):
  """Keras `residual_block_v1`: 1x1 (strided) -> 3x3 -> 1x1 (x4) with a projection or identity shortcut."""

  def __init__(self, in_features: int, filters: int, *, stride: int, conv_shortcut: bool, dtype: Any,
               rngs: nnx.Rngs):
    def conv(cin, cout, k, s=1):
      return nnx.Conv(cin, cout, (k, k), (s, s), padding='SAME' if k > 1 else 'VALID', dtype=dtype,
                      param_dtype=jnp.float32, kernel_init=nnx.initializers.glorot_uniform(), rngs=rngs)

    def bn(c):
      return batch_norm(c, epsilon=BN_EPSILON, dtype=dtype, rngs=rngs)

    if conv_shortcut:
      self.conv0, self.bn0 = conv(in_features, 4 * filters, 1, stride), bn(4 * filters)
    else:
      self.conv0, self.bn0 = None, None
    self.conv1, self.bn1 = conv(in_features, filters, 1, stride), bn(filters)
    self.conv2, self.bn2 = conv(filters, filters, 3), bn(filters)
    self.conv3, self.bn3 = conv(filters, 4 * filters, 1), bn(4 * filters)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    ura = not train
    shortcut = x if self.conv0 is None else self.bn0(self.conv0(x), use_running_average=ura)
    y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = jax.nn.relu(self.bn2(self.conv2(y), use_running_average=ura))
    y = self.bn3(self.conv3(y), use_running_average=ura)
    return jax.nn.relu(shortcut + y)

  def keras_layers(self, prefix: str) -> Iterator[KerasLayer]:
    for i in (0, 1, 2, 3):
      conv, bn = getattr(self, f'conv{i}'), getattr(self, f'bn{i}')
      if conv is not None:
        yield f'{prefix}_{i}_conv', 'conv', conv, False
        yield f'{prefix}_{i}_bn', 'bn', bn, False


class ResNet50(nnx.Module):
  """`keras.applications.ResNet50` (logits, `classifier_activation=None`) in NNX.

  Args:
    num_classes: size of the `predictions` Dense layer.
    in_channels: input channels (Keras: `input_shape[-1]`).
    include_top: with False, `__call__` returns the 2048-d globally average-pooled features.
    dropout_rate: dropout before the classifier (not in Keras; 0 keeps the Keras graph exactly).
    dtype: compute dtype (e.g. `jnp.bfloat16`); parameters and BN statistics stay float32 and BatchNorm
      reduces in float32. Logits/features are returned as float32.
    rngs: needs a 'dropout' stream (or 'default') only when `dropout_rate > 0`.
  """

  def __init__(self, num_classes: int, *, in_channels: int = 3, include_top: bool = True,
               dropout_rate: float = 0.0, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.num_classes = num_classes
    self.in_channels = in_channels
    self.include_top = include_top
    self.dtype = dtype
    glorot = nnx.initializers.glorot_uniform()
    self.conv1 = nnx.Conv(in_channels, 64, (7, 7), (2, 2), padding='VALID', dtype=dtype, param_dtype=jnp.float32,
                          kernel_init=glorot, rngs=rngs)
    self.bn1 = batch_norm(64, epsilon=BN_EPSILON, dtype=dtype, rngs=rngs)
    stages, features = [], 64
    for filters, blocks, stride in STAGES:
      stage = []
      for j in range(blocks):
        stage.append(Bottleneck(features, filters, stride=stride if j == 0 else 1, conv_shortcut=j == 0,
                                dtype=dtype, rngs=rngs))
        features = 4 * filters
      stages.append(nnx.List(stage))
    self.stages = nnx.List(stages)
    self.num_features = features
    if include_top:
      self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if dropout_rate > 0 else None
      self.head = nnx.Linear(features, num_classes, dtype=dtype, param_dtype=jnp.float32, kernel_init=glorot,
                             rngs=rngs)
    else:
      self.dropout, self.head = None, None

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f'expected NHWC input with {self.in_channels} channels, got shape {x.shape}')
    x = jnp.asarray(x, self.dtype)
    x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    x = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
    # Keras zero-pads then max-pools 'valid'; zeros never win after the ReLU, but pad the same way anyway.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    for stage in self.stages:
      for block in stage:
        x = block(x, train=train)
    x = global_avg_pool(x)
    if self.head is None:
      return x.astype(jnp.float32)
    if self.dropout is not None:
      x = self.dropout(x, deterministic=not train)
    return self.head(x).astype(jnp.float32)

  def keras_layers(self) -> Iterator[KerasLayer]:
    """(Keras layer name, kind, module, is_top) for every weight-carrying layer."""
    yield 'conv1_conv', 'conv', self.conv1, False
    yield 'conv1_bn', 'bn', self.bn1, False
    for s, stage in enumerate(self.stages):
      for j, block in enumerate(stage):
        yield from block.keras_layers(f'conv{s + 2}_block{j + 1}')
    if self.head is not None:
      yield 'predictions', 'dense', self.head, True

  def keras_reference(self, include_top: bool | None = None):
    """Builds the Keras counterpart (weights=None) of this configuration; imports Keras."""
    import keras  # pylint: disable=g-import-not-at-top
    top = self.include_top if include_top is None else include_top
    shape = (224, 224, self.in_channels) if top else (None, None, self.in_channels)
    return keras.applications.ResNet50(include_top=top, weights=None, input_shape=shape, classes=self.num_classes,
                                       classifier_activation=None)


def load_keras_weights(model: ResNet50, keras_model_or_path, *, skip_top: bool = False) -> int:
  """Copies Keras ResNet50 weights (a built model or a `.keras` / `.weights.h5` / legacy `.h5` path).

  Every kernel, bias and BN gamma/beta/moving_mean/moving_variance is copied by layer name. With
  `skip_top` the `predictions` layer is left alone (new head). Raises `WeightMismatchError` naming every
  tensor that does not fit. Returns the number of tensors copied.
  """
  source = read_keras_source(keras_model_or_path, lambda: model.keras_reference(include_top=True))
  assigner = Assigner(source.label)
  copy_keras_layers(assigner, model.keras_layers(), source, skip_top=skip_top,
                    ignore={'predictions'} if not model.include_top else set())
  return assigner.finish()


# --------------------------------------------------------------------------- Keras weight reading


@dataclasses.dataclass
class KerasSource:
  """Weight-carrying Keras layers by name, in Keras variable order."""
  label: str
  layers: dict[str, list[np.ndarray]]
  classes: dict[str, str] = dataclasses.field(default_factory=dict)  # layer name -> Keras class name
  rescaling_layers: int | None = None  # number of Rescaling layers in the graph, where known


def _snake_case(name: str) -> str:
  """Keras' `to_snake_case` (used for the layer keys of `.weights.h5` files)."""
  name = re.sub(r'\W+', '', name)
  name = re.sub('(.)([A-Z][a-z]+)', r'\1_\2', name)
  return re.sub('([a-z])([A-Z])', r'\1_\2', name).lower()


def _flat_layers(model) -> Iterator[Any]:
  for layer in model.layers:
    if hasattr(layer, 'layers'):
      yield from _flat_layers(layer)  # nested Functional / Sequential
    else:
      yield layer


def _source_from_model(model, label: str) -> KerasSource:
  layers, classes, rescaling = {}, {}, 0
  for layer in _flat_layers(model):
    cls = type(layer).__name__
    rescaling += cls == 'Rescaling'
    if layer.weights:
      layers[layer.name] = [np.asarray(w.numpy() if hasattr(w, 'numpy') else w) for w in layer.weights]
      classes[layer.name] = cls
  return KerasSource(label, layers, classes, rescaling)


def read_keras_source(keras_model_or_path, build_reference: Callable[[], Any]) -> KerasSource:
  """Reads a Keras model or weight file into a `KerasSource`.

  `build_reference()` returns a Keras model with this architecture; it is only called for Keras 3
  `.weights.h5` files, whose layer groups are keyed by class name and position rather than layer name.
  """
  if not isinstance(keras_model_or_path, (str, os.PathLike)):
    return _source_from_model(keras_model_or_path, f'Keras model {getattr(keras_model_or_path, "name", "")!r}')
  path = os.fspath(keras_model_or_path)
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if path.endswith('.keras'):
    import keras  # pylint: disable=g-import-not-at-top
    return _source_from_model(keras.saving.load_model(path, compile=False), path)
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, 'r') as f:
    if 'layer_names' in f.attrs or 'model_weights' in f:  # legacy Keras 2 / `model.save('x.h5')` layout
      group = f['model_weights'] if 'model_weights' in f else f
      layers = {}
      for name in group.attrs['layer_names']:
        name = name.decode() if isinstance(name, bytes) else str(name)
        g = group[name]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get('weight_names', [])]
        if names:
          layers[name] = [np.asarray(g[n]) for n in names]
      return KerasSource(path, layers)
    if 'layers' not in f:
      raise ValueError(f'{path}: not a Keras weight file (no "layers" or "layer_names")')
    reference = build_reference()
    layers, classes, used = {}, {}, {}
    for layer in reference.layers:
      key = _snake_case(type(layer).__name__)
      if key in used:
        used[key] += 1
        key = f'{key}_{used[key]}'
      else:
        used[key] = 0
      if not layer.weights:
        continue
      group = f.get(f'layers/{key}/vars')
      if group is not None and len(group):
        layers[layer.name] = [np.asarray(group[k]) for k in sorted(group.keys(), key=int)]
        classes[layer.name] = type(layer).__name__
    return KerasSource(path, layers, classes)


_KIND_VARS = {
    'conv': ('kernel', 'bias'),
    'dwconv': ('kernel',),
    'dense': ('kernel', 'bias'),
    'bn': ('gamma', 'beta', 'moving_mean', 'moving_variance'),
    'norm': ('mean', 'variance', 'count'),
}


def _targets(kind: str, module) -> list[tuple[str, nnx.Variable]]:
  if kind in ('conv', 'dwconv', 'dense'):
    pairs = [('kernel', module.kernel)]
    if getattr(module, 'bias', None) is not None:
      pairs.append(('bias', module.bias))
    return pairs
  if kind == 'bn':
    return [('gamma', module.scale), ('beta', module.bias), ('moving_mean', module.mean),
            ('moving_variance', module.var)]
  if kind == 'norm':
    return [('mean', module.mean), ('variance', module.variance), ('count', module.count)]
  raise ValueError(kind)


def copy_keras_layers(assigner: Assigner, entries, source: KerasSource, *, skip_top: bool = False,
                      ignore: set[str] = frozenset()) -> None:
  """Assigns `source` tensors to the modules of `entries` (from `keras_layers()`), recording mismatches.

  Layers in `source` that the model does not have (other than those in `ignore`, the head when
  `skip_top`) are recorded as errors too, so a deeper network's file does not load silently.
  """
  used = set(ignore)
  for name, kind, module, is_top in entries:
    if is_top and skip_top:
      used.add(name)
      continue
    arrays = source.layers.get(name)
    used.add(name)
    if arrays is None:
      assigner.missing(name)
      continue
    targets = _targets(kind, module)
    if len(arrays) != len(targets):
      assigner.errors.append(
          f'{name}: weight file has {len(arrays)} tensor(s) {[tuple(a.shape) for a in arrays]}, model expects '
          f'{len(targets)} ({", ".join(t for t, _ in targets)})')
      continue
    for (wname, variable), array in zip(targets, arrays):
      if kind == 'dwconv' and array.ndim == 4:  # Keras (kh, kw, C, 1) -> Flax grouped (kh, kw, 1, C)
        array = np.transpose(array, (0, 1, 3, 2))
      assigner.assign(variable, array, f'{name}/{wname}')
  if skip_top:
    used.add('predictions')
  for name in source.layers:
    if name not in used:
      assigner.errors.append(f'{name}: in {source.label} but not in the model')
