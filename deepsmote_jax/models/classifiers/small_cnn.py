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

from deepsmote_jax.models.classifiers.common import PooledClassifier

__all__ = ["SmallCNN"]


class SmallCNN(PooledClassifier):
  """conv-BN-ReLU-pool x3, global average pool, Dense.

  Args: as `PooledClassifier` (`include_top=False` returns the pooled 4*width features), with
    in_channels: default 1, for the grayscale defect images.
    width: channels of the first block (doubled per block).
  """

  min_size = 8
  head_kernel_init = staticmethod(nnx.initializers.lecun_normal())  # Flax's default Dense initialiser

  def __init__(self, num_classes: int, *, in_channels: int = 1, width: int = 16, **kwargs):
    self.width = width
    super().__init__(num_classes, in_channels=in_channels, **kwargs)

  def build_backbone(self, in_channels: int, *, dtype: Any, rngs: nnx.Rngs) -> int:
    chans = (in_channels, self.width, 2 * self.width, 4 * self.width)
    self.convs = nnx.List(
      [
        nnx.Conv(cin, cout, (3, 3), padding="SAME", use_bias=False, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        for cin, cout in zip(chans[:-1], chans[1:])
      ]
    )
    self.bns = nnx.List(
      [nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs) for c in chans[1:]]
    )
    return chans[-1]

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = jnp.asarray(self.checked_input(x), self.dtype)
    for conv, bn in zip(self.convs, self.bns):
      x = jax.nn.relu(bn(conv(x), use_running_average=not train))
      x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    return self.head(x, train=train)
