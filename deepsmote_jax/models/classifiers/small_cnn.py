"""A small CNN classifier for CPU runs and tests (no Keras counterpart).

Three blocks of 3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool (width, 2*width, 4*width channels), global
average pooling and a Dense layer. Takes the project's [-1, 1] NHWC images as they are, any spatial size
>= 8; at 64x64 with width 16 it has about 25k parameters and runs in milliseconds on a CPU.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from deepsmote_jax.models.classifiers.common import ClassifierHead

__all__ = ["SmallCNN"]


class SmallCNN(nnx.Module):
  """conv-BN-ReLU-pool x3, global average pool, Dense.

  Args:
    num_classes: logits size.
    in_channels: input channels (1 for the grayscale defect images).
    width: channels of the first block (doubled per block).
    include_top: with False, `__call__` returns the pooled 4*width features.
    dropout_rate: dropout before the Dense layer (needs a 'dropout' stream in `rngs` when > 0).
    dtype: compute dtype; parameters and BN statistics stay float32, BatchNorm reduces in float32.
      Logits/features are returned as float32.
  """

  min_size = 8

  def __init__(
    self,
    num_classes: int,
    *,
    in_channels: int = 1,
    width: int = 16,
    include_top: bool = True,
    dropout_rate: float = 0.0,
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.num_classes = num_classes
    self.in_channels = in_channels
    self.include_top = include_top
    self.dtype = dtype
    chans = (in_channels, width, 2 * width, 4 * width)
    self.convs = nnx.List(
      [
        nnx.Conv(cin, cout, (3, 3), padding="SAME", use_bias=False, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        for cin, cout in zip(chans[:-1], chans[1:])
      ]
    )
    self.bns = nnx.List(
      [nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs) for c in chans[1:]]
    )
    self.num_features = chans[-1]
    self.head = ClassifierHead(
      chans[-1],
      num_classes if include_top else None,
      dropout_rate=dropout_rate,
      kernel_init=nnx.initializers.lecun_normal(),
      dtype=dtype,
      rngs=rngs,
    )

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"expected NHWC input with {self.in_channels} channels, got shape {x.shape}")
    x = jnp.asarray(x, self.dtype)
    for conv, bn in zip(self.convs, self.bns):
      x = jax.nn.relu(bn(conv(x), use_running_average=not train))
      x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    return self.head(x, train=train)
