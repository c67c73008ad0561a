"""EfficientNet-B0..B7 in Flax NNX, layer for layer equal to `keras.applications.EfficientNetB*`.

Input preprocessing. The Keras graph starts with `Rescaling(1/255)` and a `Normalization` layer (mean,
variance and count weights; identity until weights are loaded) and expects pixels in [0, 255]. With
`include_preprocessing=True` (default) this model applies the same two steps, so logits match Keras on the
same raw input. The project's images are in [-1, 1]: either pass `include_preprocessing=False` (the
network then sees the [-1, 1] input directly, good for training from scratch) or map inputs to [0, 255]
with `(x + 1) * 127.5` (needed to use ImageNet weights).

Keras built with `weights='imagenet'` adds one more per-channel `Rescaling(1/sqrt(std))` after the
Normalization layer (a compatibility fix in keras.applications); `imagenet_rescale=True` reproduces it.
That layer has no weights, so a weight file cannot tell: set it when loading ImageNet weights.

Padding. Stride-2 convolutions pad with Keras' `correct_pad`, computed from the actual input size, which
equals a Keras model built for that input size (and one built with unknown size for even sizes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from deepsmote_jax.models.classifiers.common import PooledClassifier, batch_norm, conv2d, global_avg_pool
from deepsmote_jax.models.classifiers.keras_weights import (
  KerasApplication,
  KerasLayer,
  KerasWeights,
  Target,
  bn_layer,
  conv_layer,
  head_layers,
)

__all__ = ["EfficientNet", "EfficientNetB0", "EfficientNetB5", "VARIANTS"]

NORM_EPSILON = 1e-7  # keras.backend.epsilon(), the floor on sqrt(variance) in Normalization
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

# variant -> (width coefficient, depth coefficient, default resolution, dropout rate)
VARIANTS = {
  "b0": (1.0, 1.0, 224, 0.2),
  "b1": (1.0, 1.1, 240, 0.2),
  "b2": (1.1, 1.2, 260, 0.3),
  "b3": (1.2, 1.4, 300, 0.3),
  "b4": (1.4, 1.8, 380, 0.4),
  "b5": (1.6, 2.2, 456, 0.4),
  "b6": (1.8, 2.6, 528, 0.5),
  "b7": (2.0, 3.1, 600, 0.5),
}

# Base (B0) stages: kernel, repeats, filters in, filters out, expand ratio, first stride; SE ratio 0.25 and
# identity skip everywhere.
STAGES = (
  (3, 1, 32, 16, 1, 1),
  (3, 2, 16, 24, 6, 2),
  (5, 2, 24, 40, 6, 2),
  (3, 3, 40, 80, 6, 2),
  (5, 3, 80, 112, 6, 1),
  (5, 4, 112, 192, 6, 2),
  (3, 1, 192, 320, 6, 1),
)
SE_RATIO = 0.25

# Keras initialisers: VarianceScaling(2, fan_out, truncated normal) for convolutions and
# VarianceScaling(1/3, fan_out, uniform) for the classifier.
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
# Depthwise kernels are (kh, kw, 1, C) here but (kh, kw, C, 1) in Keras: swap the axes the fans come from.
_DWCONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "truncated_normal", in_axis=-1, out_axis=-2)
_DENSE_INIT = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Channels scaled by the width coefficient, rounded to a multiple of `divisor` (never 10% below)."""
  scaled = filters * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * scaled:
    rounded += divisor
  return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
  return int(math.ceil(depth * repeats))


def correct_pad(size: tuple[int, int], kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Keras' `imagenet_utils.correct_pad` for a known spatial size (one fewer leading row/col on even sizes)."""
  half = kernel // 2
  return tuple((half - (1 - s % 2), half) for s in size)


def _pad(x: jax.Array, kernel: int) -> jax.Array:
  (t, b), (l, r) = correct_pad(x.shape[1:3], kernel)
  return jnp.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))


class NormStat(nnx.Variable):
  """Statistics of the Keras input `Normalization` layer (not trained; counted by Keras' count_params)."""


class InputNormalization(nnx.Module):
  """Keras `Rescaling(1/255)` + `Normalization` (+ the optional ImageNet `Rescaling(1/sqrt(std))`)."""

  def __init__(self, channels: int, *, imagenet_rescale: bool = False):
    self.mean = NormStat(jnp.zeros((channels,), jnp.float32))
    self.variance = NormStat(jnp.ones((channels,), jnp.float32))
    self.count = NormStat(jnp.zeros((), jnp.int32))
    self.imagenet_rescale = imagenet_rescale

  def keras_layer(self) -> KerasLayer:
    """Keras' auto-named 'normalization' layer: mean, variance, count."""
    targets = (Target("mean", self.mean), Target("variance", self.variance), Target("count", self.count))
    return KerasLayer("normalization", targets, auto=True)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32) * jnp.float32(1.0 / 255.0)
    x = (x - self.mean[...]) / jnp.maximum(jnp.sqrt(self.variance[...]), NORM_EPSILON)
    if self.imagenet_rescale:
      x = x * jnp.asarray([1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB], jnp.float32)
    return x


class MBConv(nnx.Module):
  """Keras EfficientNet `block`: expand 1x1 -> depthwise -> squeeze-excite -> project 1x1 (+ drop-connect skip)."""

  def __init__(
    self,
    filters_in: int,
    filters_out: int,
    *,
    kernel: int,
    stride: int,
    expand_ratio: int,
    drop_rate: float,
    dtype: Any,
    rngs: nnx.Rngs,
  ):
    filters = filters_in * expand_ratio
    self.stride = stride
    self.kernel = kernel

    def conv(cin, cout, bias=False):
      return conv2d(cin, cout, 1, use_bias=bias, kernel_init=_CONV_INIT, dtype=dtype, rngs=rngs)

    def bn(c):
      return batch_norm(c, dtype=dtype, rngs=rngs)

    if expand_ratio != 1:
      self.expand_conv, self.expand_bn = conv(filters_in, filters), bn(filters)
    else:
      self.expand_conv, self.expand_bn = None, None
    self.dwconv = conv2d(
      filters,
      filters,
      kernel,
      strides=stride,
      padding="VALID" if stride == 2 else "SAME",
      groups=filters,
      use_bias=False,
      kernel_init=_DWCONV_INIT,
      dtype=dtype,
      rngs=rngs,
    )
    self.bn = bn(filters)
    filters_se = max(1, int(filters_in * SE_RATIO))
    self.se_reduce = conv(filters, filters_se, bias=True)
    self.se_expand = conv(filters_se, filters, bias=True)
    self.project_conv, self.project_bn = conv(filters, filters_out), bn(filters_out)
    self.skip = stride == 1 and filters_in == filters_out
    self.drop = nnx.Dropout(drop_rate, broadcast_dims=(1, 2, 3), rngs=rngs) if self.skip and drop_rate > 0 else None

  def __call__(self, inputs: jax.Array, *, train: bool) -> jax.Array:
    ura = not train
    x = inputs
    if self.expand_conv is not None:
      x = jax.nn.silu(self.expand_bn(self.expand_conv(x), use_running_average=ura))
    if self.stride == 2:
      x = _pad(x, self.kernel)
    x = jax.nn.silu(self.bn(self.dwconv(x), use_running_average=ura))
    se = global_avg_pool(x)[:, None, None, :]
    se = jax.nn.sigmoid(self.se_expand(jax.nn.silu(self.se_reduce(se))))
    x = self.project_bn(self.project_conv(x * se), use_running_average=ura)
    if self.skip:
      if self.drop is not None:
        x = self.drop(x, deterministic=not train)
      x = x + inputs
    return x

  def keras_layers(self, prefix: str) -> Iterator[KerasLayer]:
    if self.expand_conv is not None:
      yield conv_layer(f"{prefix}expand_conv", self.expand_conv)
      yield bn_layer(f"{prefix}expand_bn", self.expand_bn)
    yield conv_layer(f"{prefix}dwconv", self.dwconv, depthwise=True)
    yield bn_layer(f"{prefix}bn", self.bn)
    yield conv_layer(f"{prefix}se_reduce", self.se_reduce)
    yield conv_layer(f"{prefix}se_expand", self.se_expand)
    yield conv_layer(f"{prefix}project_conv", self.project_conv)
    yield bn_layer(f"{prefix}project_bn", self.project_bn)


class EfficientNet(PooledClassifier, KerasApplication):
  """`keras.applications.EfficientNetB{0..7}` (logits, `classifier_activation=None`) in NNX.

  Args: as `PooledClassifier` (`include_top=False` returns the pooled `top_activation` features), and
    variant: 'b0' .. 'b7'.
    dropout_rate: None takes the Keras default of the variant.
    drop_connect_rate: Keras' stochastic-depth rate, scaled linearly over the blocks.
    include_preprocessing: apply Keras' in-graph Rescaling(1/255) + Normalization (see module docstring:
      for [-1, 1] inputs use False or map the inputs to [0, 255]).
    imagenet_rescale: also apply the extra Rescaling of Keras models built with weights='imagenet'.
  """

  min_size = 32
  head_kernel_init = staticmethod(_DENSE_INIT)

  def __init__(
    self,
    variant: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    dropout_rate: float | None = None,
    drop_connect_rate: float = 0.2,
    include_preprocessing: bool = True,
    imagenet_rescale: bool = False,
    **kwargs,
  ):
    variant = variant.lower()
    if variant not in VARIANTS:
      raise ValueError(f"unknown EfficientNet variant {variant!r}; expected one of {sorted(VARIANTS)}")
    self.variant = variant
    self.default_size, default_dropout = VARIANTS[variant][2:]
    self.drop_connect_rate = drop_connect_rate
    self.preprocess = (
      InputNormalization(in_channels, imagenet_rescale=imagenet_rescale) if include_preprocessing else None
    )
    dropout_rate = default_dropout if dropout_rate is None else dropout_rate
    super().__init__(num_classes, in_channels=in_channels, dropout_rate=dropout_rate, **kwargs)

  def build_backbone(self, in_channels: int, *, dtype: Any, rngs: nnx.Rngs) -> int:
    width, depth = VARIANTS[self.variant][:2]
    stem = round_filters(32, width)
    self.stem_conv = conv2d(
      in_channels, stem, 3, strides=2, use_bias=False, kernel_init=_CONV_INIT, dtype=dtype, rngs=rngs
    )
    self.stem_bn = batch_norm(stem, dtype=dtype, rngs=rngs)

    total = float(sum(round_repeats(s[1], depth) for s in STAGES))
    blocks, names, b = [], [], 0
    for i, (kernel, repeats, f_in, f_out, expand, stride) in enumerate(STAGES):
      f_in, f_out = round_filters(f_in, width), round_filters(f_out, width)
      for j in range(round_repeats(repeats, depth)):
        blocks.append(
          MBConv(
            f_in if j == 0 else f_out,
            f_out,
            kernel=kernel,
            stride=stride if j == 0 else 1,
            expand_ratio=expand,
            drop_rate=self.drop_connect_rate * b / total,
            dtype=dtype,
            rngs=rngs,
          )
        )
        names.append(f"block{i + 1}{chr(j + 97)}_")
        b += 1
    self.blocks = nnx.List(blocks)
    self.block_names = tuple(names)

    top = round_filters(1280, width)
    self.top_conv = conv2d(f_out, top, 1, use_bias=False, kernel_init=_CONV_INIT, dtype=dtype, rngs=rngs)
    self.top_bn = batch_norm(top, dtype=dtype, rngs=rngs)
    return top

  @property
  def keras_name(self) -> str:
    return f"EfficientNet{self.variant.upper()}"

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = self.checked_input(x)
    if self.preprocess is not None:
      x = self.preprocess(x)
    x = jnp.asarray(x, self.dtype)
    x = jax.nn.silu(self.stem_bn(self.stem_conv(_pad(x, 3)), use_running_average=not train))
    for block in self.blocks:
      x = block(x, train=train)
    x = jax.nn.silu(self.top_bn(self.top_conv(x), use_running_average=not train))
    return self.head(x, train=train)

  def keras_layers(self) -> Iterator[KerasLayer]:
    # Without preprocessing the Keras 'normalization' layer is still in the source; it is passed over.
    yield (
      self.preprocess.keras_layer() if self.preprocess is not None else KerasLayer("normalization", None, auto=True)
    )
    yield conv_layer("stem_conv", self.stem_conv)
    yield bn_layer("stem_bn", self.stem_bn)
    for name, block in zip(self.block_names, self.blocks):
      yield from block.keras_layers(name)
    yield conv_layer("top_conv", self.top_conv)
    yield bn_layer("top_bn", self.top_bn)
    yield from head_layers(self.head)

  def keras_source_errors(self, weights: KerasWeights) -> list[str]:
    """A Keras model built with weights='imagenet' has one more input Rescaling (no weights to compare)."""
    if self.preprocess is None or weights.rescaling_layers is None:
      return []
    keras_imagenet = weights.rescaling_layers >= 2
    if keras_imagenet == self.preprocess.imagenet_rescale:
      return []
    return [
      f"input Rescaling: the Keras model {'has' if keras_imagenet else 'lacks'} the ImageNet 1/sqrt(std) "
      f"rescaling; build EfficientNet(..., imagenet_rescale={keras_imagenet})"
    ]


def EfficientNetB0(num_classes: int, **kwargs) -> EfficientNet:  # pylint: disable=invalid-name
  """`EfficientNet('b0', ...)`."""
  return EfficientNet("b0", num_classes, **kwargs)


def EfficientNetB5(num_classes: int, **kwargs) -> EfficientNet:  # pylint: disable=invalid-name
  """`EfficientNet('b5', ...)`."""
  return EfficientNet("b5", num_classes, **kwargs)
