"""The sub-pixel transposed convolution equals PyTorch's ConvTranspose2d definition."""
from __future__ import annotations

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from deepsmote_jax.models import presets
from deepsmote_jax.models.layers import ConvTranspose, conv_transpose, conv_transpose_output_size


def direct_conv_transpose(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
  """The definition, in float64: y[s*i - p + t] += x[i] * w[t] for every input position i and tap t."""
  b, h, wd, _ = x.shape
  k, _, _, c_out = w.shape
  full_h, full_w = (h - 1) * stride + k, (wd - 1) * stride + k
  y = np.zeros((b, full_h, full_w, c_out))
  for th in range(k):
    for tw in range(k):
      contrib = np.einsum("bhwi,io->bhwo", x.astype(np.float64), w[th, tw].astype(np.float64))
      y[:, th:th + (h - 1) * stride + 1:stride, tw:tw + (wd - 1) * stride + 1:stride] += contrib
  out_h = conv_transpose_output_size(h, k, stride, padding)
  out_w = conv_transpose_output_size(wd, k, stride, padding)
  return y[:, padding:padding + out_h, padding:padding + out_w]


def _preset_layers():
  """Every (input size, kernel, stride, padding) that a preset's decoder uses."""
  cases = set()
  for spec in presets.PRESETS.values():
    size = spec.decoder_input[0]
    for c in spec.decoder:
      cases.add((min(size, 13), c.kernel, c.stride, c.padding))
      size = presets.conv_transpose_out(size, c)
  return sorted(cases)


@pytest.mark.parametrize("size,kernel,stride,padding", _preset_layers() + [(5, 5, 3, 2), (6, 3, 1, 1), (4, 2, 2, 0)])
def test_matches_definition(size, kernel, stride, padding):
  rng = np.random.default_rng(size * 100 + kernel * 10 + stride + padding)
  x = rng.uniform(-1, 1, (2, size, size + 1, 3)).astype(np.float32)   # non-square catches swapped axes
  w = rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
  got = np.asarray(conv_transpose(jnp.asarray(x), jnp.asarray(w), stride=stride, padding=padding,
                                  precision=jax.lax.Precision.HIGHEST))
  want = direct_conv_transpose(x, w, stride, padding)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_module_gradients_match_definition():
  """Gradients through the fast form equal those of the definition (checked against a finite difference)."""
  rng = np.random.default_rng(0)
  layer = ConvTranspose(2, 3, 4, stride=2, padding=1, rngs=nnx.Rngs(0))
  x = jnp.asarray(rng.uniform(-1, 1, (1, 5, 5, 2)).astype(np.float32))
  target = jnp.asarray(rng.normal(size=(1, 10, 10, 3)).astype(np.float32))

  def loss(kernel):
    y = conv_transpose(x, kernel, stride=2, padding=1, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum((y - target) ** 2)

  kernel = layer.kernel[...]
  g = jax.grad(loss)(kernel)
  eps = 1e-2
  for idx in [(0, 0, 0, 0), (1, 2, 1, 2), (3, 3, 0, 1)]:
    e = jnp.zeros_like(kernel).at[idx].set(eps)
    fd = (loss(kernel + e) - loss(kernel - e)) / (2 * eps)
    np.testing.assert_allclose(float(g[idx]), float(fd), rtol=2e-2, atol=2e-2)


def test_bfloat16_close_to_float32():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(-1, 1, (2, 7, 7, 8)).astype(np.float32))
  layer = ConvTranspose(8, 4, 3, stride=2, padding=1, rngs=nnx.Rngs(1))
  layer_bf16 = ConvTranspose(8, 4, 3, stride=2, padding=1, dtype=jnp.bfloat16, rngs=nnx.Rngs(1))
  y32, y16 = layer(x), layer_bf16(x)
  assert y16.dtype == jnp.bfloat16 and layer_bf16.kernel[...].dtype == jnp.float32
  rel = float(jnp.linalg.norm(y16.astype(jnp.float32) - y32) / jnp.linalg.norm(y32))
  assert rel < 2e-2
