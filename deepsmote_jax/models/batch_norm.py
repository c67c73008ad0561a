"""BatchNorm with PyTorch's running statistics: the running variance is the unbiased one.

`nnx.BatchNorm` normalises a batch with its biased variance v (as PyTorch does) but keeps
var' = m var + (1 - m) v, where PyTorch (and so the released DeepSMOTE code) keeps the unbiased
var' = m var + (1 - m) v n / (n - 1), n the values per channel. The difference only shows in eval mode
(encoding for SMOTE, decoding synthetic images), most with small batches and maps. This layer is
`nnx.BatchNorm` -- same parameters, statistics, normalisation and masking -- with the running variance
corrected to PyTorch's: (1 - m) v = var'_flax - m var, times n / (n - 1) over the valid values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class TorchBatchNorm(nnx.BatchNorm):
  """`nnx.BatchNorm` keeping PyTorch's unbiased running variance (NHWC, statistics over N, H, W)."""

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *, mask: jax.Array | None = None):
    if use_running_average:
      return super().__call__(x, use_running_average=True, mask=mask)
    old_var = self.var[...]
    y = super().__call__(x, use_running_average=False, mask=mask)
    values = x.size // x.shape[-1] if mask is None else jnp.sum(jnp.broadcast_to(mask, x.shape[:-1] + (1,)))
    n = jnp.asarray(values, jnp.float32)
    step = self.var[...] - self.momentum * old_var  # (1 - m) v, the batch's share
    self.var[...] = jax.lax.stop_gradient(self.var[...] + step / jnp.maximum(n - 1.0, 1.0))
    return y
