"""Xception in Flax NNX, layer for layer equal to `keras.applications.Xception`.

Inputs are NHWC images already scaled to [-1, 1] (the Keras `preprocess_input` convention). Convolutions have no
bias; every BatchNormalization has Keras' defaults (center and scale, epsilon=1e-3, momentum=0.99). Separable
convolutions are a depthwise 3x3 conv followed by a pointwise 1x1 conv, as in Keras' SeparableConv2D.

`load_keras_weights` copies a Keras model (built, or saved as .keras / .h5 / .weights.h5) into the Flax model;
Keras layer names ('block2_sepconv1', 'block2_sepconv1_bn', ...) are matched by name, the four unnamed residual
1x1 convs (conv2d, conv2d_1, ...) by creation order. Keras and TensorFlow are imported only when needed.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepsmote_jax.models.classifiers._keras import Assigner, WeightMismatchError
from deepsmote_jax.models.classifiers.inception_v3 import (KerasTensors, Target, auto_named, bn_targets,
                                                            conv_targets, copy_layer, load_into, param_count)

__all__ = ["Xception", "load_keras_weights", "param_count", "WeightMismatchError"]

_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99
_glorot = nnx.initializers.glorot_uniform()  # Keras' default kernel initialiser.


def _bn(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # Computes (and reduces) in float32 whatever the compute dtype; callers cast the output back.
  return nnx.BatchNorm(features, epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, dtype=jnp.float32,
                       param_dtype=jnp.float32, use_fast_variance=False, rngs=rngs)


class _ConvBN(nnx.Module):
  """Conv2D (no bias) + BatchNorm."""

  def __init__(self, cin: int, cout: int, kernel: int, *, strides: int = 1, padding: str = "VALID", dtype: Any,
               rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides, padding=padding, use_bias=False, dtype=dtype,
                         param_dtype=jnp.float32, kernel_init=_glorot, rngs=rngs)
    self.bn = _bn(cout, rngs)
    self.dtype = dtype

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return self.bn(self.conv(x), use_running_average=not train).astype(self.dtype)


class _SepConvBN(nnx.Module):
  """SeparableConv2D 3x3 'same' (depthwise, then pointwise; no bias) + BatchNorm."""

  def __init__(self, cin: int, cout: int, *, dtype: Any, rngs: nnx.Rngs):
    self.depthwise = nnx.Conv(cin, cin, (3, 3), padding="SAME", feature_group_count=cin, use_bias=False,
                              dtype=dtype, param_dtype=jnp.float32, kernel_init=_glorot, rngs=rngs)
    self.pointwise = nnx.Conv(cin, cout, (1, 1), use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                              kernel_init=_glorot, rngs=rngs)
    self.bn = _bn(cout, rngs)
    self.dtype = dtype

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return self.bn(self.pointwise(self.depthwise(x)), use_running_average=not train).astype(self.dtype)


class _DownBlock(nnx.Module):
  """Blocks 2-4 and 13: [relu] sep-bn, relu, sep-bn, maxpool 3x3/2 'same', + (1x1/2 conv-bn shortcut)."""

  def __init__(self, cin: int, mid: int, cout: int, *, pre_act: bool, dtype: Any, rngs: nnx.Rngs):
    self.residual = _ConvBN(cin, cout, 1, strides=2, padding="SAME", dtype=dtype, rngs=rngs)
    self.sepconv1 = _SepConvBN(cin, mid, dtype=dtype, rngs=rngs)
    self.sepconv2 = _SepConvBN(mid, cout, dtype=dtype, rngs=rngs)
    self.pre_act = pre_act

  def sepconvs(self) -> list[_SepConvBN]:
    return [self.sepconv1, self.sepconv2]

  def __call__(self, x, train):
    shortcut = self.residual(x, train)
    y = jax.nn.relu(x) if self.pre_act else x  # block2 follows block1_conv2_act, already rectified
    y = self.sepconv2(jax.nn.relu(self.sepconv1(y, train)), train)
    return nnx.max_pool(y, (3, 3), strides=(2, 2), padding="SAME") + shortcut


class _MiddleBlock(nnx.Module):
  """Blocks 5-12: 3 x (relu, sep 728, bn) + identity."""

  def __init__(self, channels: int, *, dtype: Any, rngs: nnx.Rngs):
    self.sepconv1 = _SepConvBN(channels, channels, dtype=dtype, rngs=rngs)
    self.sepconv2 = _SepConvBN(channels, channels, dtype=dtype, rngs=rngs)
    self.sepconv3 = _SepConvBN(channels, channels, dtype=dtype, rngs=rngs)

  def sepconvs(self) -> list[_SepConvBN]:
    return [self.sepconv1, self.sepconv2, self.sepconv3]

  def __call__(self, x, train):
    y = x
    for sep in self.sepconvs():
      y = sep(jax.nn.relu(y), train)
    return y + x


class Xception(nnx.Module):
  """`keras.applications.Xception` (classifier_activation=None) in Flax NNX.

  Args:
    num_classes: size of the classifier output.
    in_channels: input channels (Keras' `input_shape[-1]`).
    include_top: with False the model returns the 2048-d global-average-pooled features (Keras `pooling='avg'`).
    dropout_rate: dropout before the final dense layer (Keras has none: 0.0).
    dtype: compute dtype (e.g. jnp.bfloat16); parameters and BatchNorm statistics stay float32.
    rngs: initialisation (and dropout) randomness.
  Input: NHWC in [-1, 1], height and width >= 71. Outputs are float32.
  """

  def __init__(self, num_classes: int, *, in_channels: int = 3, include_top: bool = True, dropout_rate: float = 0.0,
               dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.num_classes = num_classes
    self.in_channels = in_channels
    self.include_top = include_top
    self.dtype = dtype
    kw = dict(dtype=dtype, rngs=rngs)
    self.block1_conv1 = _ConvBN(in_channels, 32, 3, strides=2, **kw)
    self.block1_conv2 = _ConvBN(32, 64, 3, **kw)
    down = functools.partial(_DownBlock, **kw)
    self.entry = nnx.List([down(64, 128, 128, pre_act=False), down(128, 256, 256, pre_act=True),
                           down(256, 728, 728, pre_act=True)])  # blocks 2-4
    self.middle = nnx.List([_MiddleBlock(728, **kw) for _ in range(8)])  # blocks 5-12
    self.exit = down(728, 728, 1024, pre_act=True)  # block 13
    self.block14_sepconv1 = _SepConvBN(1024, 1536, **kw)
    self.block14_sepconv2 = _SepConvBN(1536, 2048, **kw)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if include_top and dropout_rate > 0 else None
    self.fc = (nnx.Linear(2048, num_classes, dtype=dtype, param_dtype=jnp.float32, kernel_init=_glorot, rngs=rngs)
               if include_top else None)

  def keras_layers(self) -> tuple[list[tuple[str, nnx.Module]], list[_ConvBN]]:
    """(Keras layer name, conv module) for the named convs, and the residual shortcuts in creation order."""
    named: list[tuple[str, nnx.Module]] = [("block1_conv1", self.block1_conv1), ("block1_conv2", self.block1_conv2)]
    blocks = list(self.entry) + list(self.middle) + [self.exit]
    for number, block in enumerate(blocks, start=2):
      named += [(f"block{number}_sepconv{j}", sep) for j, sep in enumerate(block.sepconvs(), start=1)]
    named += [("block14_sepconv1", self.block14_sepconv1), ("block14_sepconv2", self.block14_sepconv2)]
    return named, [block.residual for block in list(self.entry) + [self.exit]]

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = jnp.asarray(x, self.dtype)
    x = jax.nn.relu(self.block1_conv1(x, train))
    x = jax.nn.relu(self.block1_conv2(x, train))
    for block in self.entry:
      x = block(x, train)
    for block in self.middle:
      x = block(x, train)
    x = self.exit(x, train)
    x = jax.nn.relu(self.block14_sepconv1(x, train))
    x = jax.nn.relu(self.block14_sepconv2(x, train))
    x = jnp.mean(x, axis=(1, 2))  # 'avg_pool'
    if self.fc is None:
      return x.astype(jnp.float32)
    if self.dropout is not None:
      x = self.dropout(x, deterministic=not train)
    return self.fc(x).astype(jnp.float32)


def _depthwise_to_flax(array: np.ndarray) -> np.ndarray | None:
  """Keras depthwise kernel (kh, kw, C, 1) -> Flax grouped-conv kernel (kh, kw, 1, C); None if not of that form."""
  if array.ndim != 4 or array.shape[3] != 1:
    return None
  return np.transpose(array, (0, 1, 3, 2))


def _sep_targets(sep: _SepConvBN, expected_channels: int) -> list[Target]:
  def to_flax(array: np.ndarray) -> np.ndarray | None:
    out = _depthwise_to_flax(array)
    return out if out is not None and out.shape[3] == expected_channels else None
  return [("depthwise_kernel", sep.depthwise.kernel, to_flax), ("pointwise_kernel", sep.pointwise.kernel, None)]


def load_keras_weights(model: Xception, keras_model_or_path, *, skip_top: bool = False) -> int:
  """Copies `keras.applications.Xception` weights into `model`; returns the number of tensors copied.

  `keras_model_or_path` is a built Keras model or a .keras / .h5 / .weights.h5 file. Every shape mismatch is
  collected and raised together as `WeightMismatchError` (the model is then left unchanged). With `skip_top=True`
  the 'predictions' layer (and any other non-backbone layer) is not loaded, for a model with include_top=False or
  another num_classes; a warning notes what was skipped. To load without a random initialisation, build the model
  with `nnx.eval_shape(lambda: Xception(...))` (every variable must then come from the file).
  """
  def fill(assigner: Assigner, tensors: KerasTensors) -> set[str]:
    named, residuals = model.keras_layers()
    consumed: set[str] = set()
    for name, module in named:
      if isinstance(module, _SepConvBN):
        copy_layer(assigner, tensors, name, _sep_targets(module, module.depthwise.in_features))
      else:
        copy_layer(assigner, tensors, name, conv_targets(module.conv))
      copy_layer(assigner, tensors, f"{name}_bn", bn_targets(module.bn))
      consumed |= {name, f"{name}_bn"}
    convs, bns = auto_named(tensors, "conv2d"), auto_named(tensors, "batch_normalization")
    for kind, names in (("residual Conv2D", convs), ("residual BatchNormalization", bns)):
      if len(names) != len(residuals):
        assigner.errors.append(f"{assigner.source} has {len(names)} {kind} layers, Xception has {len(residuals)}")
    for i, unit in enumerate(residuals):
      conv = convs[i] if i < len(convs) else f"conv2d #{i} (absent)"
      bn = bns[i] if i < len(bns) else f"batch_normalization #{i} (absent)"
      copy_layer(assigner, tensors, conv, conv_targets(unit.conv))
      copy_layer(assigner, tensors, bn, bn_targets(unit.bn))
    for name in convs[len(residuals):] + bns[len(residuals):]:
      assigner.errors.append(f"{name}: extra layer in {assigner.source}")
    return consumed | set(convs) | set(bns)

  return load_into(model, keras_model_or_path, fill, skip_top=skip_top, arch="Xception")
