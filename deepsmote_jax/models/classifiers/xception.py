"""Xception in Flax NNX, layer for layer equal to `keras.applications.Xception`.

Inputs are NHWC images already scaled to [-1, 1] (the Keras `preprocess_input` convention). Convolutions have no
bias; every BatchNormalization has Keras' defaults (center and scale, epsilon=1e-3, momentum=0.99). Separable
convolutions are a depthwise 3x3 conv followed by a pointwise 1x1 conv, as in Keras' SeparableConv2D.

Keras names most layers ('block2_sepconv1', 'block2_sepconv1_bn', ...); the four residual 1x1 convs and their
BatchNorms are auto-named (conv2d, conv2d_1, ...) and `load_keras_weights` matches them in creation order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from deepsmote_jax.models.classifiers.common import ConvBN, PooledClassifier, batch_norm, conv2d
from deepsmote_jax.models.classifiers.keras_weights import (
  KerasApplication,
  KerasLayer,
  bn_layer,
  conv_layer,
  head_layers,
  separable_layer,
)

__all__ = ["Xception"]


class _SepConvBN(nnx.Module):
  """SeparableConv2D 3x3 'same' (depthwise, then pointwise; no bias) + BatchNorm."""

  def __init__(self, cin: int, cout: int, *, dtype: Any, rngs: nnx.Rngs):
    self.depthwise = conv2d(cin, cin, 3, padding="SAME", groups=cin, use_bias=False, dtype=dtype, rngs=rngs)
    self.pointwise = conv2d(cin, cout, 1, use_bias=False, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(cout, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return self.bn(self.pointwise(self.depthwise(x)), use_running_average=not train)


class _DownBlock(nnx.Module):
  """Blocks 2-4 and 13: [relu] sep-bn, relu, sep-bn, maxpool 3x3/2 'same', + (1x1/2 conv-bn shortcut)."""

  def __init__(self, cin: int, mid: int, cout: int, *, pre_act: bool, dtype: Any, rngs: nnx.Rngs):
    self.residual = ConvBN(cin, cout, 1, strides=2, padding="SAME", dtype=dtype, rngs=rngs)
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


class Xception(PooledClassifier, KerasApplication):
  """`keras.applications.Xception` (classifier_activation=None) in Flax NNX.

  Args: as `PooledClassifier`; `include_top=False` returns the 2048-d pooled features (Keras `pooling='avg'`).
  Input: NHWC in [-1, 1], height and width >= 71. Outputs are float32.
  """

  keras_name = "Xception"
  min_size = 71

  def build_backbone(self, in_channels: int, *, dtype: Any, rngs: nnx.Rngs) -> int:
    kw = dict(dtype=dtype, rngs=rngs)
    self.block1_conv1 = ConvBN(in_channels, 32, 3, strides=2, **kw)
    self.block1_conv2 = ConvBN(32, 64, 3, **kw)
    down = functools.partial(_DownBlock, **kw)
    self.entry = nnx.List(
      [down(64, 128, 128, pre_act=False), down(128, 256, 256, pre_act=True), down(256, 728, 728, pre_act=True)]
    )  # blocks 2-4
    self.middle = nnx.List([_MiddleBlock(728, **kw) for _ in range(8)])  # blocks 5-12
    self.exit = down(728, 728, 1024, pre_act=True)  # block 13
    self.block14_sepconv1 = _SepConvBN(1024, 1536, **kw)
    self.block14_sepconv2 = _SepConvBN(1536, 2048, **kw)
    return 2048

  def named_units(self) -> list[tuple[str, ConvBN | _SepConvBN]]:
    """(Keras layer name, unit) of the named convs; the unit's BatchNorm is Keras' '<name>_bn'."""
    named = [("block1_conv1", self.block1_conv1), ("block1_conv2", self.block1_conv2)]
    blocks = list(self.entry) + list(self.middle) + [self.exit]
    for number, block in enumerate(blocks, start=2):
      named += [(f"block{number}_sepconv{j}", sep) for j, sep in enumerate(block.sepconvs(), start=1)]
    return named + [("block14_sepconv1", self.block14_sepconv1), ("block14_sepconv2", self.block14_sepconv2)]

  def keras_layers(self) -> Iterator[KerasLayer]:
    for name, unit in self.named_units():
      if isinstance(unit, _SepConvBN):
        yield separable_layer(name, unit.depthwise, unit.pointwise)
      else:
        yield conv_layer(name, unit.conv)
      yield bn_layer(f"{name}_bn", unit.bn)
    for block in list(self.entry) + [self.exit]:  # the auto-named residual shortcuts
      yield conv_layer("conv2d", block.residual.conv, auto=True)
      yield bn_layer("batch_normalization", block.residual.bn, auto=True)
    yield from head_layers(self.head)

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
    return self.head(x, train=train)
