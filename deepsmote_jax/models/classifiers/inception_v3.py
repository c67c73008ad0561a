"""InceptionV3 in Flax NNX, layer for layer equal to `keras.applications.InceptionV3`.

Inputs are NHWC images already scaled to [-1, 1] (the Keras `preprocess_input` convention); the model holds no
preprocessing. Every conv is Conv2D(use_bias=False) + BatchNormalization(scale=False, epsilon=1e-3, momentum=0.99)
+ ReLU, as in Keras. `aux_head=True` adds the auxiliary classifier of Szegedy et al. (2016) on the 'mixed7' output,
which Keras does not have (it is never loaded from Keras files and is left out of `param_count`).

Keras names the 94 conv and BN layers automatically (conv2d, conv2d_1, ...): `load_keras_weights` matches them in
that creation order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from deepsmote_jax.models.classifiers.common import ClassifierHead, ConvBN, PooledClassifier
from deepsmote_jax.models.classifiers.keras_weights import (
  KerasApplication,
  KerasLayer,
  bn_layer,
  conv_layer,
  head_layers,
)

__all__ = ["InceptionV3"]


def _avg3(x: jax.Array) -> jax.Array:
  """3x3 stride-1 'same' average pool that, like Keras/TF, ignores the padding in the count."""
  return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


def _max3s2(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class _Block(nnx.Module):
  """Base for the 'mixed' blocks; `ORDER` lists the conv units in Keras' creation order."""

  ORDER: tuple[str, ...] = ()

  def units(self) -> list[ConvBN]:
    return [getattr(self, name) for name in self.ORDER]


class _BlockA(_Block):
  """mixed0-2 (35x35 at 299 input): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

  ORDER = ("b1", "b5_1", "b5_2", "b3_1", "b3_2", "b3_3", "pool")

  def __init__(self, cin: int, pool_features: int, cb: Callable[..., ConvBN]):
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

  def __init__(self, cin: int, cb: Callable[..., ConvBN]):
    self.b3 = cb(cin, 384, 3, strides=2, padding="VALID")
    self.b3d_1, self.b3d_2 = cb(cin, 64, 1), cb(64, 96, 3)
    self.b3d_3 = cb(96, 96, 3, strides=2, padding="VALID")

  def __call__(self, x, train):
    b3d = self.b3d_3(self.b3d_2(self.b3d_1(x, train), train), train)
    return jnp.concatenate([self.b3(x, train), b3d, _max3s2(x)], axis=-1)


class _BlockC(_Block):
  """mixed4-7 (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

  ORDER = ("b1", "b7_1", "b7_2", "b7_3", "b7d_1", "b7d_2", "b7d_3", "b7d_4", "b7d_5", "pool")

  def __init__(self, cin: int, c7: int, cb: Callable[..., ConvBN]):
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

  def __init__(self, cin: int, cb: Callable[..., ConvBN]):
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

  def __init__(self, cin: int, cb: Callable[..., ConvBN]):
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

  def __init__(self, cin: int, num_classes: int, cb: Callable[..., ConvBN], *, dtype: Any, rngs: nnx.Rngs):
    self.conv0 = cb(cin, 128, 1)
    self.conv1 = cb(128, 768, 5, padding="VALID")
    self.head = ClassifierHead(768, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x, train):
    h, w = x.shape[1:3]
    x = self.conv0(nnx.avg_pool(x, (min(5, h), min(5, w)), strides=(3, 3), padding="VALID"), train)
    ph, pw = max(0, 5 - x.shape[1]), max(0, 5 - x.shape[2])
    if ph or pw:
      x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    return self.head(self.conv1(x, train), train=train)


class InceptionV3(PooledClassifier, KerasApplication):
  """`keras.applications.InceptionV3` (classifier_activation=None) in Flax NNX.

  Args: as `PooledClassifier` (`include_top=False` returns the 2048-d pooled features, Keras `pooling='avg'`), and
    aux_head: add the auxiliary classifier; `__call__(train=True)` then returns `(logits, aux_logits)`.
  Input: NHWC in [-1, 1], height and width >= 75. Outputs are float32.
  """

  keras_name = "InceptionV3"
  min_size = 75

  def __init__(self, num_classes: int, *, include_top: bool = True, aux_head: bool = False, **kwargs):
    if aux_head and not include_top:
      raise ValueError("aux_head=True needs include_top=True (the auxiliary classifier predicts num_classes)")
    self.aux_head = aux_head
    super().__init__(num_classes, include_top=include_top, **kwargs)

  def build_backbone(self, in_channels: int, *, dtype: Any, rngs: nnx.Rngs) -> int:
    cb = functools.partial(ConvBN, padding="SAME", use_scale=False, relu=True, dtype=dtype, rngs=rngs)  # conv2d_bn
    self.stem = nnx.List(
      [
        cb(in_channels, 32, 3, strides=2, padding="VALID"),
        cb(32, 32, 3, padding="VALID"),
        cb(32, 64, 3),
        cb(64, 80, 1, padding="VALID"),  # after a 3x3/2 max-pool
        cb(80, 192, 3, padding="VALID"),  # followed by a 3x3/2 max-pool
      ]
    )
    self.mixed = nnx.List(
      [
        _BlockA(192, 32, cb),
        _BlockA(256, 64, cb),
        _BlockA(288, 64, cb),  # mixed0-2 -> 288
        _BlockB(288, cb),  # mixed3 -> 768
        _BlockC(768, 128, cb),
        _BlockC(768, 160, cb),
        _BlockC(768, 160, cb),
        _BlockC(768, 192, cb),  # mixed4-7
        _BlockD(768, cb),  # mixed8 -> 1280
        _BlockE(1280, cb),
        _BlockE(2048, cb),  # mixed9-10 -> 2048
      ]
    )
    # Before the head (which `PooledClassifier` adds after this returns): `rngs` is drawn in creation order.
    self.aux = _AuxHead(768, self.num_classes, cb, dtype=dtype, rngs=rngs) if self.aux_head else None
    return 2048

  def units(self) -> list[ConvBN]:
    """The 94 conv+BN units of the backbone in Keras' layer-creation order (aux head excluded)."""
    return list(self.stem) + [u for block in self.mixed for u in block.units()]

  def keras_layers(self) -> Iterator[KerasLayer]:
    for unit in self.units():
      yield conv_layer("conv2d", unit.conv, auto=True)
      yield bn_layer("batch_normalization", unit.bn, auto=True)
    yield from head_layers(self.head)

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
    logits = self.head(x, train=train)
    return logits if aux is None else (logits, aux)
