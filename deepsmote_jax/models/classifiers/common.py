"""Pieces every classifier shares: Keras-equivalent Conv2D / BatchNorm, the classifier head and the constructor
around it (`PooledClassifier`), the parameter count.

Parameters and BatchNorm statistics are float32 whatever the compute dtype, so a bfloat16 model loads and
exports the same tensors as a float32 one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

GLOROT_UNIFORM = nnx.initializers.glorot_uniform()  # Keras' default kernel initialiser
BN_MOMENTUM = 0.99  # Keras' BatchNormalization defaults
BN_EPSILON = 1e-3


def conv2d(
  cin: int,
  cout: int,
  kernel: int | tuple[int, int],
  *,
  strides: int = 1,
  padding: str = "VALID",
  use_bias: bool = True,
  groups: int = 1,
  kernel_init=GLOROT_UNIFORM,
  dtype: Any,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  """Keras `Conv2D` (or, with `groups=cin`, `DepthwiseConv2D`): Keras' defaults, float32 parameters."""
  kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
  params = dict(use_bias=use_bias, kernel_init=kernel_init, param_dtype=jnp.float32, rngs=rngs)
  return nnx.Conv(
    cin, cout, kernel, (strides, strides), padding=padding, feature_group_count=groups, dtype=dtype, **params
  )


def batch_norm(
  features: int, *, epsilon: float = BN_EPSILON, use_scale: bool = True, dtype: Any, rngs: nnx.Rngs
) -> nnx.BatchNorm:
  """Keras `BatchNormalization`: momentum 0.99, two-pass batch variance as Keras' `moments`.

  Statistics, parameters and reductions are float32; the output is cast to `dtype`.
  """
  params = dict(use_scale=use_scale, param_dtype=jnp.float32, rngs=rngs)
  return nnx.BatchNorm(features, momentum=BN_MOMENTUM, epsilon=epsilon, use_fast_variance=False, dtype=dtype, **params)


class ConvBN(nnx.Module):
  """Keras Conv2D without bias + BatchNormalization (Keras' defaults), then a ReLU if `relu`.

  InceptionV3's `conv2d_bn` is `ConvBN(..., padding="SAME", use_scale=False, relu=True)`.
  """

  def __init__(self, cin: int, cout: int, kernel, *, use_scale=True, relu=False, dtype: Any, rngs: nnx.Rngs, **conv):
    """`conv`: `strides` and `padding`, as `conv2d` takes them."""
    self.conv = conv2d(cin, cout, kernel, use_bias=False, dtype=dtype, rngs=rngs, **conv)
    self.bn = batch_norm(cout, use_scale=use_scale, dtype=dtype, rngs=rngs)
    self.relu = relu

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.bn(self.conv(x), use_running_average=not train)
    return jax.nn.relu(y) if self.relu else y


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Spatial mean of an NHWC map, accumulated in float32, returned in the input dtype."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)


class ClassifierHead(nnx.Module):
  """Global average pooling -> dropout -> Dense (Keras' 'avg_pool' + 'predictions'); outputs are float32.

  With `num_classes=None` (a model built with `include_top=False`) it returns the pooled features.
  Dropout is not in the Keras graphs; `dropout_rate=0` keeps them exact.
  """

  def __init__(
    self,
    in_features: int,
    num_classes: int | None,
    *,
    dropout_rate: float = 0.0,
    kernel_init=GLOROT_UNIFORM,
    dtype: Any,
    rngs: nnx.Rngs,
  ):
    has_dense = num_classes is not None
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if has_dense and dropout_rate > 0 else None
    self.dense = (
      nnx.Linear(in_features, num_classes, dtype=dtype, param_dtype=jnp.float32, kernel_init=kernel_init, rngs=rngs)
      if has_dense
      else None
    )

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = global_avg_pool(x)
    if self.dense is None:
      return x.astype(jnp.float32)
    if self.dropout is not None:
      x = self.dropout(x, deterministic=not train)
    return self.dense(x).astype(jnp.float32)


class PooledClassifier(nnx.Module):
  """A backbone, then `ClassifierHead`: the settings, constructor and input check every classifier shares.

  `__init__` stores the settings, has the subclass build its layers (`build_backbone`, which returns the
  backbone's output channels) and then adds the head: parameters are drawn from `rngs` in that order.

  Args:
    num_classes: size of the classifier output.
    in_channels: input channels (Keras' `input_shape[-1]`).
    include_top: with False, `__call__` returns the globally average-pooled backbone features.
    dropout_rate: dropout before the Dense layer (not in the Keras graphs; 0 keeps them exact).
    dtype: compute dtype (e.g. `jnp.bfloat16`); parameters and BatchNorm statistics stay float32 and BatchNorm
      reduces in float32. Logits/features are returned as float32.
    rngs: initialisation randomness; needs a 'dropout' stream (or 'default') to train with dropout.
  """

  head_kernel_init = staticmethod(GLOROT_UNIFORM)  # the Dense layer's initialiser

  def __init__(
    self,
    num_classes: int,
    *,
    in_channels: int = 3,
    include_top: bool = True,
    dropout_rate: float = 0.0,
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.num_classes = num_classes
    self.in_channels = in_channels
    self.include_top = include_top
    self.dropout_rate = dropout_rate
    self.dtype = dtype
    self.num_features = self.build_backbone(in_channels, dtype=dtype, rngs=rngs)
    self.head = ClassifierHead(
      self.num_features,
      num_classes if include_top else None,
      dropout_rate=dropout_rate,
      kernel_init=self.head_kernel_init,
      dtype=dtype,
      rngs=rngs,
    )

  def build_backbone(self, in_channels: int, *, dtype: Any, rngs: nnx.Rngs) -> int:
    """Creates the layers before the head; returns the channels of their output."""
    raise NotImplementedError

  def checked_input(self, x: jax.Array) -> jax.Array:
    """`x` itself, after checking that it is NHWC with `in_channels` channels."""
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"expected NHWC input with {self.in_channels} channels, got shape {x.shape}")
    return x


def _size(module: nnx.Module | None) -> int:
  if module is None:
    return 0
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(module, nnx.Not(nnx.RngState))))


def param_count(model: nnx.Module, *, include_aux: bool = False) -> int:
  """Every tensor Keras' `count_params()` counts: parameters, BatchNorm moving statistics and the
  EfficientNet input-Normalization statistics (RNG state is not counted).

  The InceptionV3 auxiliary head has no Keras counterpart and is left out unless `include_aux=True`.
  Works on abstract models (`nnx.eval_shape`) too.
  """
  aux = None if include_aux else getattr(model, "aux", None)
  return _size(model) - _size(aux)
