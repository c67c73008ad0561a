"""ResNet50 in Flax NNX, layer for layer equal to `keras.applications.ResNet50`.

The Keras graph has no preprocessing inside the model (Keras' 'caffe' `preprocess_input` runs outside it),
so this model takes exactly what the Keras model takes. Feed [-1, 1] images as they are when training from
scratch; for ImageNet weights apply the Keras preprocessing first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from deepsmote_jax.models.classifiers.common import PooledClassifier, batch_norm, conv2d
from deepsmote_jax.models.classifiers.keras_weights import (
  KerasApplication,
  KerasLayer,
  bn_layer,
  conv_layer,
  head_layers,
)

__all__ = ["ResNet50"]

BN_EPSILON = 1.001e-5
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (bottleneck filters, blocks, first stride)


class Bottleneck(nnx.Module):
  """Keras `residual_block_v1`: 1x1 (strided) -> 3x3 -> 1x1 (x4) with a projection or identity shortcut."""

  def __init__(self, in_features: int, filters: int, *, stride: int, conv_shortcut: bool, dtype: Any, rngs: nnx.Rngs):
    def conv(cin, cout, k, s=1):
      return conv2d(cin, cout, k, strides=s, padding="SAME" if k > 1 else "VALID", dtype=dtype, rngs=rngs)

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
      conv, bn = getattr(self, f"conv{i}"), getattr(self, f"bn{i}")
      if conv is not None:
        yield conv_layer(f"{prefix}_{i}_conv", conv)
        yield bn_layer(f"{prefix}_{i}_bn", bn)


class ResNet50(PooledClassifier, KerasApplication):
  """`keras.applications.ResNet50` (logits, `classifier_activation=None`) in NNX.

  Args: as `PooledClassifier`; `include_top=False` returns the 2048-d pooled features.
  """

  keras_name = "ResNet50"
  min_size = 32

  def build_backbone(self, in_channels: int, *, dtype: Any, rngs: nnx.Rngs) -> int:
    self.conv1 = conv2d(in_channels, 64, 7, strides=2, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(64, epsilon=BN_EPSILON, dtype=dtype, rngs=rngs)
    stages, features = [], 64
    for filters, blocks, stride in STAGES:
      stage = []
      for j in range(blocks):
        stage.append(
          Bottleneck(features, filters, stride=stride if j == 0 else 1, conv_shortcut=j == 0, dtype=dtype, rngs=rngs)
        )
        features = 4 * filters
      stages.append(nnx.List(stage))
    self.stages = nnx.List(stages)
    return features

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = jnp.asarray(self.checked_input(x), self.dtype)
    x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    x = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
    # Keras zero-pads then max-pools 'valid'; zeros never win after the ReLU, but pad the same way anyway.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    for stage in self.stages:
      for block in stage:
        x = block(x, train=train)
    return self.head(x, train=train)

  def keras_layers(self) -> Iterator[KerasLayer]:
    yield conv_layer("conv1_conv", self.conv1)
    yield bn_layer("conv1_bn", self.bn1)
    for s, stage in enumerate(self.stages):
      for j, block in enumerate(stage):
        yield from block.keras_layers(f"conv{s + 2}_block{j + 1}")
    yield from head_layers(self.head)
