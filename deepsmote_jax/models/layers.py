"""Layers shared by the encoder/decoder: a fast PyTorch-style transposed convolution.

XLA lowers `lax.conv_transpose` (and so `nnx.ConvTranspose`) to a convolution over a zero-dilated input,
which is slow on GPUs for the small-channel, large-image layers of DeepSMOTE's decoder (see
../shared/PERFORMANCE.md: 1.4x-10x slower than PyTorch). A transposed convolution with stride s, kernel k
and padding p is exactly a stride-1 convolution with a window of J = ceil(k/s) taps per axis that produces
s*s*C_out channels -- one group per output phase (row parity, column parity) -- followed by
depth-to-space and a crop. Each phase's taps are a fixed selection of the original kernel's taps, so the
parameter keeps the ConvTranspose layout and is rearranged inside the jitted function (a reshape, a flip
and a transpose: no gather).

Derivation (one axis). PyTorch: y[o] = sum_{i,t : o = s*i - p + t} x[i] * w[t], output length
(n-1)*s - 2p + k. Write q = o + p = s*m + r with phase r in [0, s). Then t = r + s*j and i = m - j for
j = 0..J-1, so y[s*m + r - p] = sum_j x[m-j] * w[r + s*j]: a correlation of x (padded by J-1 on both
sides) with the J-tap kernel g_r[d] = w[r + s*(J-1-d)] (zero where r + s*(J-1-d) >= k). Interleaving the
phases gives q in [0, s*(n+J-1)), and y is the slice q in [p, p + L).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
  """PyTorch ConvTranspose2d output size: (in-1)*stride - 2*pad + kernel."""
  return (size - 1) * stride - 2 * padding + kernel


def _phase_kernel(kernel: Array, stride: int) -> tuple[Array, int]:
  """(k, k, Cin, Cout) ConvTranspose kernel -> (J, J, Cin, s*s*Cout) stride-1 kernel, and J."""
  k_h, k_w, c_in, c_out = kernel.shape
  if k_h != k_w:
    raise ValueError(f"only square kernels are supported, got {k_h}x{k_w}")
  s = stride
  taps = math.ceil(k_h / s)
  full = taps * s
  w = jnp.pad(kernel, ((0, full - k_h), (0, full - k_w), (0, 0), (0, 0)))
  # t = a*s + r with a = J-1-d: split each kernel axis into (a, r), flip a to get d.
  w = w.reshape(taps, s, taps, s, c_in, c_out)[::-1, :, ::-1]
  # (d_h, r_h, d_w, r_w, ci, co) -> (d_h, d_w, ci, r_h, r_w, co)
  w = w.transpose(0, 2, 4, 1, 3, 5).reshape(taps, taps, c_in, s * s * c_out)
  return w, taps


def conv_transpose(x: Array, kernel: Array, *, stride: int, padding: int,
                   precision=None) -> Array:
  """PyTorch `conv_transpose2d` (NHWC input, kernel laid out (k, k, C_in, C_out)) in sub-pixel form.

  `kernel[t_h, t_w, ci, co]` multiplies `x[i_h, i_w, ci]` into `y[s*i_h - p + t_h, s*i_w - p + t_w, co]`;
  a PyTorch weight of shape (C_in, C_out, k, k) converts with `w.permute(2, 3, 0, 1)`.
  """
  b, h, w_, c_in = x.shape
  k = kernel.shape[0]
  s, p = stride, padding
  c_out = kernel.shape[-1]
  out_h = conv_transpose_output_size(h, k, s, p)
  out_w = conv_transpose_output_size(w_, k, s, p)
  if out_h < 1 or out_w < 1:
    raise ValueError(f"transposed convolution (kernel {k}, stride {s}, padding {p}) of a {h}x{w_} input "
                     f"has no output")
  g, taps = _phase_kernel(kernel.astype(x.dtype), s)
  # Only the rows/cols of the full (padded) correlation that survive the crop are computed:
  # phase rows m cover q = s*m + r in [p, p + out); m in [floor(p/s), ceil((p+out)/s)).
  m_lo_h, m_hi_h = p // s, -(-(p + out_h) // s)
  m_lo_w, m_hi_w = p // s, -(-(p + out_w) // s)
  pad_lo = taps - 1
  # Index m of the full correlation reads x[m-J+1 .. m]; pad so that [m_lo, m_hi) is a VALID conv.
  pad_h = (pad_lo - m_lo_h, m_hi_h - 1 - (h - 1))
  pad_w = (pad_lo - m_lo_w, m_hi_w - 1 - (w_ - 1))
  z = jax.lax.conv_general_dilated(
      x, g, window_strides=(1, 1), padding=(pad_h, pad_w),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
  n_h, n_w = z.shape[1], z.shape[2]
  z = z.reshape(b, n_h, n_w, s, s, c_out).transpose(0, 1, 3, 2, 4, 5).reshape(b, n_h * s, n_w * s, c_out)
  off_h = p - s * m_lo_h
  off_w = p - s * m_lo_w
  return z[:, off_h:off_h + out_h, off_w:off_w + out_w, :]


class ConvTranspose(nnx.Module):
  """Transposed convolution with PyTorch `ConvTranspose2d` semantics, computed in sub-pixel form.

  The kernel parameter has shape (k, k, C_in, C_out); initialisation matches PyTorch's default
  (kaiming-uniform with a=sqrt(5) on fan_in = C_out*k*k, bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int, *, stride: int = 1,
               padding: int = 0, use_bias: bool = True, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.stride = stride
    self.padding = padding
    self.dtype = dtype
    fan_in = out_features * kernel_size * kernel_size  # PyTorch's fan_in for ConvTranspose weights
    bound = 1.0 / math.sqrt(fan_in)
    shape = (kernel_size, kernel_size, in_features, out_features)
    self.kernel = nnx.Param(jax.random.uniform(rngs.params(), shape, param_dtype, -bound, bound))
    self.bias = (nnx.Param(jax.random.uniform(rngs.params(), (out_features,), param_dtype, -bound, bound))
                 if use_bias else None)

  def __call__(self, x: Array) -> Array:
    dtype = self.dtype or x.dtype
    y = conv_transpose(x.astype(dtype), self.kernel[...].astype(dtype), stride=self.stride, padding=self.padding)
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return y
