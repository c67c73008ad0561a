"""InceptionV3 in Flax NNX, layer for layer equal to `keras.applications.InceptionV3`.

Inputs are NHWC images already scaled to [-1, 1] (the Keras `preprocess_input` convention); the model holds no
preprocessing. Every conv is Conv2D(use_bias=False) + BatchNormalization(scale=False, epsilon=1e-3, momentum=0.99)
+ ReLU, as in Keras. `aux_head=True` adds the auxiliary classifier of Szegedy et al. (2016) on the 'mixed7' output,
which Keras does not have (it is never loaded from Keras files and is left out of `param_count`).

`load_keras_weights` copies a Keras model (built, or saved as .keras / .h5 / .weights.h5) into the Flax model.
Keras and TensorFlow are imported only inside the functions that need them.
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepsmote_jax.models.classifiers._keras import Assigner, WeightMismatchError

__all__ = ["InceptionV3", "load_keras_weights", "param_count", "WeightMismatchError"]

_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99
_glorot = nnx.initializers.glorot_uniform()  # Keras' default kernel initialiser.


class _ConvBN(nnx.Module):
  """Conv2D (no bias) + BatchNorm (no scale) + ReLU: Keras' `conv2d_bn`."""

  def __init__(self, cin: int, cout: int, kernel: int | Sequence[int], *, strides: int = 1, padding: str = "SAME",
               dtype: Any, rngs: nnx.Rngs):
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    self.conv = nnx.Conv(cin, cout, kernel, strides, padding=padding, use_bias=False, dtype=dtype,
                         param_dtype=jnp.float32, kernel_init=_glorot, rngs=rngs)
    # BatchNorm computes (and reduces) in float32 whatever the compute dtype; the output is cast back.
    self.bn = nnx.BatchNorm(cout, use_scale=False, epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, dtype=jnp.float32,
                            param_dtype=jnp.float32, use_fast_variance=False, rngs=rngs)
    self.dtype = dtype

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.bn(self.conv(x), use_running_average=not train)
    return jax.nn.relu(y).astype(self.dtype)


def _avg3(x: jax.Array) -> jax.Array:
  """3x3 stride-1 'same' average pool that, like Keras/TF, ignores the padding in the count."""
  return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


def _max3s2(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class _Block(nnx.Module):
  """Base for the 'mixed' blocks; `ORDER` lists the conv units in Keras' creation order."""

  ORDER: tuple[str, ...] = ()

  def units(self) -> list[_ConvBN]:
    return [getattr(self, name) for name in self.ORDER]


class _BlockA(_Block):
  """mixed0-2 (35x35 at 299 input): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

  ORDER = ("b1", "b5_1", "b5_2", "b3_1", "b3_2", "b3_3", "pool")

  def __init__(self, cin: int, pool_features: int, cb: Callable[..., _ConvBN]):
    self.b1 = cb(cin, 64, 1)
    self.b5_1, self.b5_2 = cb(cin, 48, 1), cb(48, 64, 5)
    self.b3_1, self.b3_2, self.b3_3 = cb(cin, 64, 1), cb(64, 96, 3), cb(96, 96, 3)
    self.pool = cb(cin, pool_features, 1)

  def __call__(self, x, train):
    b5 = self.b5_2(self.b5_1(x, train), train)
    b3 = self.b3_3(self.b3_2(self.b3_1(x, train), train), train)
    return jnp.concatenate([self.b1(x, train), b5, b3, self.pool(_avg3(x), train)], axis=-1)


class _BlockB(_Block):
  """mixed3 (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  ORDER = ("b3", "b3d_1", "b3d_2", "b3d_3")

  def __init__(self, cin: int, cb: Callable[..., _ConvBN]):
    self.b3 = cb(cin, 384, 3, strides=2, padding="VALID")
    self.b3d_1, self.b3d_2 = cb(cin, 64, 1), cb(64, 96, 3)
    self.b3d_3 = cb(96, 96, 3, strides=2, padding="VALID")

  def __call__(self, x, train):
    b3d = self.b3d_3(self.b3d_2(self.b3d_1(x, train), train), train)
    return jnp.concatenate([self.b3(x, train), b3d, _max3s2(x)], axis=-1)


class _BlockC(_Block):
  """mixed4-7 (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

  ORDER = ("b1", "b7_1", "b7_2", "b7_3", "b7d_1", "b7d_2", "b7d_3", "b7d_4", "b7d_5", "pool")

  def __init__(self, cin: int, c7: int, cb: Callable[..., _ConvBN]):
    self.b1 = cb(cin, 192, 1)
    self.b7_1, self.b7_2, self.b7_3 = cb(cin, c7, 1), cb(c7, c7, (1, 7)), cb(c7, 192, (7, 1))
    self.b7d_1, self.b7d_2, self.b7d_3 = cb(cin, c7, 1), cb(c7, c7, (7, 1)), cb(c7, c7, (1, 7))
    self.b7d_4, self.b7d_5 = cb(c7, c7, (7, 1)), cb(c7, 192, (1, 7))
    self.pool = cb(cin, 192, 1)

  def __call__(self, x, train):
    b7 = self.b7_3(self.b7_2(self.b7_1(x, train), train), train)
    b7d = x
    for unit in (self.b7d_1, self.b7d_2, self.b7d_3, self.b7d_4, self.b7d_5):
      b7d = unit(b7d, train)
    return jnp.concatenate([self.b1(x, train), b7, b7d, self.pool(_avg3(x), train)], axis=-1)


class _BlockD(_Block):
  """mixed8 (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  ORDER = ("b3_1", "b3_2", "b7_1", "b7_2", "b7_3", "b7_4")

  def __init__(self, cin: int, cb: Callable[..., _ConvBN]):
    self.b3_1, self.b3_2 = cb(cin, 192, 1), cb(192, 320, 3, strides=2, padding="VALID")
    self.b7_1, self.b7_2, self.b7_3 = cb(cin, 192, 1), cb(192, 192, (1, 7)), cb(192, 192, (7, 1))
    self.b7_4 = cb(192, 192, 3, strides=2, padding="VALID")

  def __call__(self, x, train):
    b3 = self.b3_2(self.b3_1(x, train), train)
    b7 = x
    for unit in (self.b7_1, self.b7_2, self.b7_3, self.b7_4):
      b7 = unit(b7, train)
    return jnp.concatenate([b3, b7, _max3s2(x)], axis=-1)


class _BlockE(_Block):
  """mixed9-10 (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avgpool-1x1."""

  ORDER = ("b1", "b3_1", "b3_2a", "b3_2b", "b3d_1", "b3d_2", "b3d_3a", "b3d_3b", "pool")

  def __init__(self, cin: int, cb: Callable[..., _ConvBN]):
    self.b1 = cb(cin, 320, 1)
    self.b3_1, self.b3_2a, self.b3_2b = cb(cin, 384, 1), cb(384, 384, (1, 3)), cb(384, 384, (3, 1))
    self.b3d_1, self.b3d_2 = cb(cin, 448, 1), cb(448, 384, 3)
    self.b3d_3a, self.b3d_3b = cb(384, 384, (1, 3)), cb(384, 384, (3, 1))
    self.pool = cb(cin, 192, 1)

  def __call__(self, x, train):
    b3 = self.b3_1(x, train)
    b3 = jnp.concatenate([self.b3_2a(b3, train), self.b3_2b(b3, train)], axis=-1)
    b3d = self.b3d_2(self.b3d_1(x, train), train)
    b3d = jnp.concatenate([self.b3d_3a(b3d, train), self.b3d_3b(b3d, train)], axis=-1)
    return jnp.concatenate([self.b1(x, train), b3, b3d, self.pool(_avg3(x), train)], axis=-1)


class _AuxHead(nnx.Module):
  """Auxiliary classifier on 'mixed7': avgpool 5x5/3, 1x1 conv 128, 5x5 conv 768 (valid), global pool, dense.

  For inputs below 299 px the 'mixed7' map is smaller than 17x17: the pool window is clipped to the map and the
  pooled map is zero-padded to 5x5 so the 5x5 valid conv still yields at least one position.
  """

  def __init__(self, cin: int, num_classes: int, cb: Callable[..., _ConvBN], *, dtype: Any, rngs: nnx.Rngs):
    self.conv0 = cb(cin, 128, 1)
    self.conv1 = cb(128, 768, 5, padding="VALID")
    self.fc = nnx.Linear(768, num_classes, dtype=dtype, param_dtype=jnp.float32, kernel_init=_glorot, rngs=rngs)

  def __call__(self, x, train):
    h, w = x.shape[1:3]
    x = self.conv0(nnx.avg_pool(x, (min(5, h), min(5, w)), strides=(3, 3), padding="VALID"), train)
    ph, pw = max(0, 5 - x.shape[1]), max(0, 5 - x.shape[2])
    if ph or pw:
      x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    x = jnp.mean(self.conv1(x, train), axis=(1, 2))
    return self.fc(x)


class InceptionV3(nnx.Module):
  """`keras.applications.InceptionV3` (classifier_activation=None) in Flax NNX.

  Args:
    num_classes: size of the classifier output.
    in_channels: input channels (Keras' `input_shape[-1]`).
    include_top: with False the model returns the 2048-d global-average-pooled features (Keras `pooling='avg'`).
    aux_head: add the auxiliary classifier; `__call__(train=True)` then returns `(logits, aux_logits)`.
    dropout_rate: dropout before the final dense layer (Keras has none: 0.0).
    dtype: compute dtype (e.g. jnp.bfloat16); parameters and BatchNorm statistics stay float32.
    rngs: initialisation (and dropout) randomness.
  Input: NHWC in [-1, 1], height and width >= 75. Outputs are float32.
  """

  def __init__(self, num_classes: int, *, in_channels: int = 3, include_top: bool = True, aux_head: bool = False,
               dropout_rate: float = 0.0, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if aux_head and not include_top:
      raise ValueError("aux_head=True needs include_top=True (the auxiliary classifier predicts num_classes)")
    self.num_classes = num_classes
    self.in_channels = in_channels
    self.include_top = include_top
    self.dtype = dtype
    cb = functools.partial(_ConvBN, dtype=dtype, rngs=rngs)
    self.stem = nnx.List([
        cb(in_channels, 32, 3, strides=2, padding="VALID"),
        cb(32, 32, 3, padding="VALID"),
        cb(32, 64, 3),
        cb(64, 80, 1, padding="VALID"),  # after a 3x3/2 max-pool
        cb(80, 192, 3, padding="VALID"),  # followed by a 3x3/2 max-pool
    ])
    self.mixed = nnx.List([
        _BlockA(192, 32, cb), _BlockA(256, 64, cb), _BlockA(288, 64, cb),  # mixed0-2 -> 288
        _BlockB(288, cb),  # mixed3 -> 768
        _BlockC(768, 128, cb), _BlockC(768, 160, cb), _BlockC(768, 160, cb), _BlockC(768, 192, cb),  # mixed4-7
        _BlockD(768, cb),  # mixed8 -> 1280
        _BlockE(1280, cb), _BlockE(2048, cb),  # mixed9-10 -> 2048
    ])
    self.aux = _AuxHead(768, num_classes, cb, dtype=dtype, rngs=rngs) if aux_head else None
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if include_top and dropout_rate > 0 else None
    self.fc = (nnx.Linear(2048, num_classes, dtype=dtype, param_dtype=jnp.float32, kernel_init=_glorot, rngs=rngs)
               if include_top else None)

  def units(self) -> list[_ConvBN]:
    """The 94 conv+BN units of the backbone in Keras' layer-creation order (aux head excluded)."""
    return list(self.stem) + [u for block in self.mixed for u in block.units()]

  def __call__(self, x: jax.Array, *, train: bool):
    x = jnp.asarray(x, self.dtype)
    for i, unit in enumerate(self.stem):
      x = unit(x, train)
      if i in (2, 4):
        x = _max3s2(x)
    aux = None
    for i, block in enumerate(self.mixed):
      x = block(x, train)
      if i == 7 and self.aux is not None and train:  # 'mixed7'
        aux = self.aux(x, train)
    x = jnp.mean(x, axis=(1, 2))  # 'avg_pool'
    if self.fc is None:
      return x.astype(jnp.float32)
    if self.dropout is not None:
      x = self.dropout(x, deterministic=not train)
    logits = self.fc(x).astype(jnp.float32)
    if aux is not None:
      return logits, aux.astype(jnp.float32)
    return logits


def _count(module: nnx.Module | None) -> int:
  if module is None:
    return 0
  leaves = jax.tree.leaves(nnx.state(module, nnx.Param)) + jax.tree.leaves(nnx.state(module, nnx.BatchStat))
  return int(sum(np.size(leaf) for leaf in leaves))


def param_count(model: nnx.Module, *, include_aux: bool = False) -> int:
  """Parameters plus BatchNorm moving statistics, counted like Keras' `count_params()`.

  The InceptionV3 auxiliary head (absent from Keras) is left out unless `include_aux=True`.
  """
  aux = getattr(model, "aux", None)
  return _count(model) - (0 if include_aux else _count(aux))


# ---------------------------------------------------------------------------------------------------------------
# Reading Keras weights (shared with xception.py).

# Variable order per layer kind in Keras 3 `.weights.h5` files, which store variables by index only.
_KERAS3_VAR_NAMES = {
    "conv2d": ("kernel", "bias"),
    "separable_conv2d": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "dense": ("kernel", "bias"),
}
_BN_VAR_NAMES = {3: ("beta", "moving_mean", "moving_variance"), 4: ("gamma", "beta", "moving_mean", "moving_variance")}

KerasTensors = dict[str, dict[str, np.ndarray]]


def _short(name: str) -> str:
  """'conv2d_1/kernel:0' -> 'kernel'."""
  return name.rsplit("/", 1)[-1].split(":", 1)[0]


def _from_keras_model(model, out: KerasTensors) -> None:
  for layer in model.layers:
    if hasattr(layer, "layers") and layer.weights:  # a nested model, e.g. the backbone inside a Sequential
      _from_keras_model(layer, out)
    elif layer.weights:
      out[layer.name] = {_short(w.name): np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in layer.weights}


def _from_keras3_h5(group, out: KerasTensors) -> None:
  for key in group:
    sub = group[key]
    if "layers" in sub:  # nested model
      _from_keras3_h5(sub["layers"], out)
      continue
    if "vars" not in sub or not len(sub["vars"]):
      continue
    vars_ = sub["vars"]
    name = vars_.attrs.get("name", key)
    name = name.decode() if isinstance(name, bytes) else str(name)
    arrays = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
    kind = re.sub(r"_\d+$", "", key)
    names = (_BN_VAR_NAMES.get(len(arrays)) if kind == "batch_normalization" else _KERAS3_VAR_NAMES.get(kind))
    if names is None or len(names) < len(arrays):
      names = tuple(str(i) for i in range(len(arrays)))
    out[name] = dict(zip(names, arrays))


def _from_legacy_h5(group, out: KerasTensors) -> None:
  def text(s):
    return s.decode() if isinstance(s, bytes) else str(s)
  for name in map(text, group.attrs["layer_names"]):
    weight_names = [text(w) for w in group[name].attrs.get("weight_names", [])]
    if weight_names:
      out[name] = {_short(w): np.asarray(group[name][w]) for w in weight_names}


def read_keras_tensors(source) -> tuple[KerasTensors, str]:
  """`{layer name: {variable name: array}}` from a Keras model or a .keras / .h5 / .weights.h5 file.

  .keras files are opened with `keras.models.load_model`; .h5 files (Keras 3 weights-only or legacy full-model /
  weights files such as the keras-applications ImageNet downloads) are read with h5py, without TensorFlow.
  """
  out: KerasTensors = {}
  if hasattr(source, "layers"):
    _from_keras_model(source, out)
    return out, f"keras model {getattr(source, 'name', '?')!r}"
  path = os.fspath(source)
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if path.endswith(".keras"):
    import keras  # pylint: disable=g-import-not-at-top
    _from_keras_model(keras.models.load_model(path, compile=False), out)
  elif path.endswith(".h5") or path.endswith(".hdf5"):
    import h5py  # pylint: disable=g-import-not-at-top
    with h5py.File(path, "r") as f:
      if "layer_names" in f.attrs:
        _from_legacy_h5(f, out)
      elif "model_weights" in f:
        _from_legacy_h5(f["model_weights"], out)
      elif "layers" in f:
        _from_keras3_h5(f["layers"], out)
      else:
        raise ValueError(f"{path}: not a Keras weight file (no 'layers', 'model_weights' or 'layer_names')")
  else:
    raise ValueError(f"{path}: expected a .keras, .h5 or .weights.h5 file")
  return out, path


def _suffix(name: str) -> int:
  m = re.search(r"_(\d+)$", name)
  return int(m.group(1)) if m else 0


def auto_named(tensors: KerasTensors, prefix: str) -> list[str]:
  """Layers Keras named automatically (`conv2d`, `conv2d_1`, ...) in creation order (the numeric suffix)."""
  pattern = re.compile(rf"^{prefix}(_\d+)?$")
  return sorted((n for n in tensors if pattern.match(n)), key=_suffix)


Target = tuple[str, nnx.Variable, Callable[[np.ndarray], np.ndarray] | None]


def copy_layer(assigner: Assigner, tensors: KerasTensors, layer: str, targets: Sequence[Target]) -> None:
  """Copies `tensors[layer][var]` into each target variable; records missing / extra / misshapen tensors."""
  src = tensors.get(layer)
  if src is None:
    for var, _, _ in targets:
      assigner.missing(f"{layer}/{var}")
    return
  for var, variable, to_flax in targets:
    if var not in src:
      assigner.missing(f"{layer}/{var}")
    elif to_flax is None:
      assigner.assign(variable, src[var], f"{layer}/{var}")
    else:
      array = to_flax(np.asarray(src[var]))
      if array is None:  # the converter rejected the Keras shape; report it in Keras layout
        assigner.errors.append(f"{layer}/{var}: weight file has shape {tuple(np.shape(src[var]))}, "
                               f"model expects {_keras_depthwise_shape(variable)}")
      else:
        assigner.assign(variable, array, f"{layer}/{var}")
  for var in sorted(set(src) - {t[0] for t in targets}):
    assigner.errors.append(f"{layer}/{var}: present in {assigner.source} but not in the model")


def _keras_depthwise_shape(variable: nnx.Variable) -> tuple[int, ...]:
  kh, kw, _, c = variable.get_value().shape
  return (kh, kw, c, 1)


def conv_targets(conv: nnx.Conv) -> list[Target]:
  targets: list[Target] = [("kernel", conv.kernel, None)]
  if conv.bias is not None:
    targets.append(("bias", conv.bias, None))
  return targets


def bn_targets(bn: nnx.BatchNorm) -> list[Target]:
  targets: list[Target] = [] if bn.scale is None else [("gamma", bn.scale, None)]
  targets.append(("beta", bn.bias, None))
  return targets + [("moving_mean", bn.mean, None), ("moving_variance", bn.var, None)]


def load_top(assigner: Assigner, tensors: KerasTensors, model: nnx.Module, consumed: set[str], *,
             skip_top: bool, arch: str) -> None:
  """Copies Keras' 'predictions' Dense into `model.fc`, or skips it (and any other non-backbone layer)."""
  leftovers = sorted(set(tensors) - consumed - {"predictions"})
  has_top = "predictions" in tensors
  if skip_top:
    skipped = (["predictions"] if has_top else []) + leftovers
    notes = [f"{arch}: skip_top=True, backbone loaded from {assigner.source}"]
    if skipped:
      notes.append("not loaded: " + ", ".join(skipped))
    if model.fc is not None:
      notes.append(f"the {model.num_classes}-class head keeps its initialisation")
    warnings.warn("; ".join(notes), stacklevel=3)
    return
  for name in leftovers:
    assigner.errors.append(f"{name}: layer {sorted(tensors[name])} in {assigner.source} has no counterpart in the "
                           f"{arch} backbone (pass skip_top=True to load only the backbone)")
  if model.fc is None:
    if has_top:
      for var, array in tensors["predictions"].items():
        assigner.errors.append(f"predictions/{var}: weight file has shape {np.shape(array)}, but the model has "
                               "include_top=False (pass skip_top=True to load only the backbone)")
    return
  before = len(assigner.errors)
  copy_layer(assigner, tensors, "predictions", [("kernel", model.fc.kernel, None), ("bias", model.fc.bias, None)])
  if len(assigner.errors) > before:
    assigner.errors[-1] += " (pass skip_top=True to load only the backbone)"


def _abstract_paths(model: nnx.Module) -> list[str]:
  """Parameters / BN statistics that are still ShapeDtypeStructs (model built with nnx.eval_shape)."""
  flat = nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))
  return ["/".join(map(str, path)) for path, var in flat
          if isinstance(var.get_value() if hasattr(var, "get_value") else var, jax.ShapeDtypeStruct)]


def load_into(model: nnx.Module, source, fill: Callable[[Assigner, KerasTensors], set[str]], *, skip_top: bool,
              arch: str) -> int:
  """Reads `source`, lets `fill` copy the backbone, then the top; all-or-nothing (restores the model on error)."""
  tensors, description = read_keras_tensors(source)
  assigner = Assigner(description)
  snapshot = jax.tree.map(lambda a: a, nnx.state(model))  # copies the Variable containers, not the arrays
  consumed = fill(assigner, tensors)
  load_top(assigner, tensors, model, consumed, skip_top=skip_top, arch=arch)
  try:
    copied = assigner.finish()
  except WeightMismatchError:
    nnx.update(model, snapshot)
    raise
  abstract = _abstract_paths(model)
  if abstract:  # built with nnx.eval_shape and some variables have no Keras counterpart (top skipped, aux head)
    raise ValueError(f"{len(abstract)} variable(s) are still abstract after loading (the model was built with "
                     f"nnx.eval_shape): {', '.join(abstract[:8])}{' ...' if len(abstract) > 8 else ''}; build the "
                     "model concretely to keep an initialised head")
  return copied


def load_keras_weights(model: InceptionV3, keras_model_or_path, *, skip_top: bool = False) -> int:
  """Copies `keras.applications.InceptionV3` weights into `model`; returns the number of tensors copied.

  `keras_model_or_path` is a built Keras model or a .keras / .h5 / .weights.h5 file. Keras names the 94 conv and
  BN layers automatically (conv2d, conv2d_1, ...); they are matched in that numeric order. Every shape mismatch is
  collected and raised together as `WeightMismatchError`, and the model is then left unchanged. To load weights
  without paying for a random initialisation, build the model with `nnx.eval_shape(lambda: InceptionV3(...))` and
  load into it (every variable must then come from the file: no skipped top, no aux head). With
  `skip_top=True` the 'predictions' layer (and any other non-backbone layer, e.g. a new head) is not loaded, for a
  model with include_top=False or another num_classes; a warning notes what was skipped. The auxiliary head has
  no Keras counterpart and keeps its initialisation.
  """
  def fill(assigner: Assigner, tensors: KerasTensors) -> set[str]:
    units = model.units()
    convs, bns = auto_named(tensors, "conv2d"), auto_named(tensors, "batch_normalization")
    for kind, names in (("Conv2D", convs), ("BatchNormalization", bns)):
      if len(names) != len(units):
        assigner.errors.append(f"{assigner.source} has {len(names)} {kind} layers, InceptionV3 has {len(units)}")
    for i, unit in enumerate(units):
      conv = convs[i] if i < len(convs) else f"conv2d #{i} (absent)"
      bn = bns[i] if i < len(bns) else f"batch_normalization #{i} (absent)"
      copy_layer(assigner, tensors, conv, conv_targets(unit.conv))
      copy_layer(assigner, tensors, bn, bn_targets(unit.bn))
    for name in convs[len(units):] + bns[len(units):]:
      assigner.errors.append(f"{name}: extra layer in {assigner.source}")
    return set(convs) | set(bns)

  return load_into(model, keras_model_or_path, fill, skip_top=skip_top, arch="InceptionV3")
