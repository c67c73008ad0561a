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

Rewrites measured in benchmarks/results/cpu_tuning.md (see also ../shared/PERFORMANCE.md, "CPU facts"):

* Exact matrix products, on every backend: a convolution whose output is 1x1 (every preset's last encoder
  layer) and a transposed convolution whose input is 1x1 (the AMOLED decoders' first layer) are one
  `dot_general` of the image with a slice of the kernel -- the same sums, parameters in their layout.
* On the CPU backend only (`jax.default_backend() == "cpu"` at trace time; elsewhere the code is exactly the
  sub-pixel form above and `lax.conv_general_dilated`):
  - a transposed convolution is computed in scatter form (`conv_transpose_scatter`, PyTorch's col2im):
    one matrix product x @ kernel gives every tap's contribution, shifted blocks add them into place, and
    the gradient is im2col of dy and two matrix products (a `jax.custom_vjp`). XLA:CPU runs these 10-60x
    faster than the backward convolutions of the sub-pixel form, and the form skips the sub-pixel form's
    products with zero padding (half the work of deepsmote_mnist's k4 s1 p0 layers);
  - a strided convolution keeps XLA's forward and weight gradient and takes its input gradient from the
    scatter-form transposed convolution (`_conv_cpu`, a `jax.custom_vjp`): XLA:CPU's own is up to 15x
    slower (deepsmote_mnist's 7x7 -> 3x3 layer). A stride-1 convolution (none in the presets) gets an
    im2col weight gradient instead.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

Array = jax.Array

_NHWC = ("NHWC", "HWIO", "NHWC")

# Which rewrites are active, read at trace time: 'matmul' (the exact 1x1 products, every backend), 'cpu_scatter'
# (the scatter form of transposed convolutions, CPU only) and 'cpu_grads' (the custom convolution gradients,
# CPU only; with 'cpu_scatter' off they also serve the sub-pixel form's convolution). Only
# benchmarks/cpu_tuning.py and the tests switch them off, to measure and check each against plain XLA.
FAST_PATHS = {"matmul": True, "cpu_scatter": True, "cpu_grads": True}


def _on_cpu(rewrite: str) -> bool:
  return FAST_PATHS[rewrite] and jax.default_backend() == "cpu"


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


def conv_transpose(
  x: Array, kernel: Array, *, stride: int, padding: int, precision=None, output_size: tuple[int, int] | None = None
) -> Array:
  """PyTorch `conv_transpose2d` (NHWC input, kernel laid out (k, k, C_in, C_out)) in sub-pixel form.

  `kernel[t_h, t_w, ci, co]` multiplies `x[i_h, i_w, ci]` into `y[s*i_h - p + t_h, s*i_w - p + t_w, co]`;
  a PyTorch weight of shape (C_in, C_out, k, k) converts with `w.permute(2, 3, 0, 1)`. `output_size`
  (h, w) replaces the default (in-1)*s - 2p + k per axis (PyTorch's `output_padding`; the input gradient of
  a strided convolution needs it). A 1x1 input is one matrix product.
  """
  b, h, w_, c_in = x.shape
  k = kernel.shape[0]
  s, p = stride, padding
  c_out = kernel.shape[-1]
  out_h, out_w = output_size or (conv_transpose_output_size(h, k, s, p), conv_transpose_output_size(w_, k, s, p))
  if out_h < 1 or out_w < 1:
    raise ValueError(f"transposed convolution (kernel {k}, stride {s}, padding {p}) of a {h}x{w_} input has no output")
  kernel = kernel.astype(x.dtype)
  if FAST_PATHS["matmul"] and h == 1 and w_ == 1 and out_h <= k - p and out_w <= k - p:
    # y[o_h, o_w] = x @ kernel[o_h + p, o_w + p] (the only tap that reaches o from the single input pixel).
    return lax.dot_general(
      x[:, 0, 0, :], kernel[p : p + out_h, p : p + out_w], (((1,), (2,)), ((), ())), precision=precision
    )
  if _on_cpu("cpu_scatter"):
    return conv_transpose_scatter(x, kernel, stride=s, padding=p, precision=precision, output_size=(out_h, out_w))
  g, taps = _phase_kernel(kernel, s)
  # Only the rows/cols of the full (padded) correlation that survive the crop are computed:
  # phase rows m cover q = s*m + r in [p, p + out); m in [floor(p/s), ceil((p+out)/s)).
  m_lo_h, m_hi_h = p // s, -(-(p + out_h) // s)
  m_lo_w, m_hi_w = p // s, -(-(p + out_w) // s)
  pad_lo = taps - 1
  # Index m of the full correlation reads x[m-J+1 .. m]; pad so that [m_lo, m_hi) is a VALID conv.
  pad_h = (pad_lo - m_lo_h, m_hi_h - 1 - (h - 1))
  pad_w = (pad_lo - m_lo_w, m_hi_w - 1 - (w_ - 1))
  if _on_cpu("cpu_grads"):
    z = _conv_cpu(x, g, (1, 1), (pad_h, pad_w), precision)
  else:
    z = jax.lax.conv_general_dilated(
      x,
      g,
      window_strides=(1, 1),
      padding=(pad_h, pad_w),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=precision,
    )
  n_h, n_w = z.shape[1], z.shape[2]
  z = z.reshape(b, n_h, n_w, s, s, c_out).transpose(0, 1, 3, 2, 4, 5).reshape(b, n_h * s, n_w * s, c_out)
  off_h = p - s * m_lo_h
  off_w = p - s * m_lo_w
  return z[:, off_h : off_h + out_h, off_w : off_w + out_w, :]


def conv_transpose_scatter(
  x: Array, kernel: Array, *, stride: int, padding: int, precision=None, output_size: tuple[int, int] | None = None
) -> Array:
  """`conv_transpose` in scatter form (PyTorch's col2im), for XLA:CPU.

  Tap t = s*j + r (J = ceil(k/s) shifts j, s phases r per axis) adds x[i] @ kernel[t] to output row
  s*(i + j) + r - p. One matrix product cols = x @ kernel gives every (j, r) at once, laid out
  (B, H, W, J, J, s, s, C_out); the J*J blocks are shifted by j (pads) and summed, the s*s phases
  interleaved (depth to space) and the result cropped to [p, p + out) (zero-extended past the end). The
  same sums as the definition, with no convolution and none of the sub-pixel form's products with zero
  padding. The gradient (`_scatter_bwd`) is im2col of dy (J*J slices) and two matrix products.
  """
  b, h, w_, c_in = x.shape
  k, s = kernel.shape[0], stride
  c_out = kernel.shape[-1]
  out = output_size or (conv_transpose_output_size(h, k, s, padding), conv_transpose_output_size(w_, k, s, padding))
  taps = -(-k // s)
  kernel = jnp.pad(kernel.astype(x.dtype), ((0, taps * s - k), (0, taps * s - k), (0, 0), (0, 0)))
  # (j_h, r_h, j_w, r_w, ci, co) -> (ci, j_h, j_w, r_h, r_w, co)
  kernel = kernel.reshape(taps, s, taps, s, c_in, c_out).transpose(4, 0, 2, 1, 3, 5)
  return _scatter(x, kernel, s, padding, tuple(out), precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _scatter(x, kernel, s, p, out, precision):
  b, h, w_, _ = x.shape
  taps, c_out = kernel.shape[1], kernel.shape[-1]
  cols = lax.dot_general(x, kernel, (((3,), (0,)), ((), ())), precision=precision)  # (b, h, w, J, J, s, s, co)
  zero = jnp.zeros((), cols.dtype)
  y = None
  for j_h in range(taps):
    for j_w in range(taps):
      block = lax.pad(
        cols[:, :, :, j_h, j_w],
        zero,
        ((0, 0, 0), (j_h, taps - 1 - j_h, 0), (j_w, taps - 1 - j_w, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)),
      )
      y = block if y is None else y + block
  n_h, n_w = h + taps - 1, w_ + taps - 1
  y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, n_h * s, n_w * s, c_out)
  return lax.pad(y, zero, ((0, 0, 0), (-p, out[0] + p - n_h * s, 0), (-p, out[1] + p - n_w * s, 0), (0, 0, 0)))


def _scatter_fwd(x, kernel, s, p, out, precision):
  return _scatter(x, kernel, s, p, out, precision), (x, kernel)


def _scatter_bwd(s, p, out, precision, res, dy):
  x, kernel = res
  b, h, w_, c_in = x.shape
  taps, c_out = kernel.shape[1], kernel.shape[-1]
  n_h, n_w = h + taps - 1, w_ + taps - 1
  d = lax.pad(
    dy, jnp.zeros((), dy.dtype), ((0, 0, 0), (p, n_h * s - p - out[0], 0), (p, n_w * s - p - out[1], 0), (0, 0, 0))
  )
  d = d.reshape(b, n_h, s, n_w, s, c_out).transpose(0, 1, 3, 2, 4, 5)  # (b, n_h, n_w, s, s, co)
  dcols = jnp.stack(
    [
      lax.slice(d, (0, j_h, j_w, 0, 0, 0), (b, j_h + h, j_w + w_, s, s, c_out))
      for j_h in range(taps)
      for j_w in range(taps)
    ],
    axis=3,
  )  # (b, h, w, J*J, s, s, co)
  k2 = kernel.reshape(c_in, taps * taps, s, s, c_out)
  dx = lax.dot_general(dcols, k2, (((3, 4, 5, 6), (1, 2, 3, 4)), ((), ())), precision=precision)
  dk = lax.dot_general(x, dcols, (((0, 1, 2), (0, 1, 2)), ((), ())), precision=precision)
  return dx, dk.reshape(kernel.shape)


_scatter.defvjp(_scatter_fwd, _scatter_bwd)


def _conv(x: Array, w: Array, strides, padding, precision) -> Array:
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC, precision=precision)


def conv_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int) -> int:
  """Output size of a convolution along one axis (floor division, as PyTorch and XLA)."""
  return (size + pad_lo + pad_hi - kernel) // stride + 1


def conv_to_single_pixel(x: Array, w: Array, padding, precision=None) -> Array:
  """A convolution (NHWC, HWIO) whose output is 1x1, as one matrix product over its single window.

  The window covers padded rows [0, k), i.e. input rows [-pad_lo, k - pad_lo): the image rows it reaches
  meet kernel rows shifted by pad_lo; the rest of the window lies on zero padding.
  """
  (plh, _), (plw, _) = padding
  kh, kw = w.shape[:2]
  h0, w0 = max(0, -plh), max(0, -plw)
  h1, w1 = min(x.shape[1], kh - plh), min(x.shape[2], kw - plw)
  y = lax.dot_general(
    x[:, h0:h1, w0:w1, :],
    w[h0 + plh : h1 + plh, w0 + plw : w1 + plw],
    (((1, 2, 3), (0, 1, 2)), ((), ())),
    precision=precision,
  )
  return y[:, None, None, :]


def conv_weight_grad(x: Array, dy: Array, w_shape, strides, padding, precision=None, *, mode: str = "taps") -> Array:
  """d(sum(conv(x, w) * dy)) / dw without XLA's backward convolution.

  'taps': one (C_in x N) @ (N x C_out) product per kernel tap, N = B*H_out*W_out, summed over the strided
  slices of the padded input that the tap meets; 'im2col': the same slices side by side, one product;
  'patches': `lax.conv_general_dilated_patches` + one product.
  """
  kh, kw, c, f = w_shape
  sh, sw = strides
  b, ho, wo, _ = dy.shape
  contract = (((0, 1, 2), (0, 1, 2)), ((), ()))
  if mode == "patches":
    pt = lax.conv_general_dilated_patches(
      x, (kh, kw), strides, padding, dimension_numbers=_NHWC, precision=precision
    )  # features ordered (c, kh, kw)
    g = lax.dot_general(pt, dy, contract, precision=precision)
    return g.reshape(c, kh, kw, f).transpose(1, 2, 0, 3)
  (plh, phh), (plw, phw) = padding
  xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (plh, phh, 0), (plw, phw, 0), (0, 0, 0)))
  slices = [
    lax.slice(xp, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
    for i in range(kh)
    for j in range(kw)
  ]
  if mode == "im2col":
    g = lax.dot_general(jnp.concatenate(slices, axis=-1), dy, contract, precision=precision)
    return g.reshape(kh, kw, c, f)
  if mode != "taps":
    raise ValueError(f"unknown weight-gradient mode {mode!r}")
  return jnp.stack([lax.dot_general(t, dy, contract, precision=precision) for t in slices]).reshape(kh, kw, c, f)


def conv_input_grad(dy: Array, w: Array, x_shape, strides, padding, precision=None) -> Array:
  """d(sum(conv(x, w) * dy)) / dx without XLA's backward convolution: stride 1 correlates dy with the flipped
  kernel (I and O swapped, a physical transpose, so XLA sees a plain HWIO kernel); a stride s > 1 is
  `conv_transpose` of dy (scatter form on the CPU) with padding pad_lo and output size (H, W). Square strides
  only."""
  kh, kw = w.shape[:2]
  (plh, _), (plw, _) = padding
  h, w_ = x_shape[1], x_shape[2]
  wt = w.transpose(0, 1, 3, 2)
  if tuple(strides) == (1, 1):
    # dx[i] = sum_t dy[i + pad_lo - t] * w[t]
    pads = ((kh - 1 - plh, h - dy.shape[1] + plh), (kw - 1 - plw, w_ - dy.shape[2] + plw))
    return _conv(dy, wt[::-1, ::-1], (1, 1), pads, precision)
  if strides[0] != strides[1] or plh != plw or kh != kw:
    raise ValueError(
      f"conv_input_grad: square strides, padding and kernels only, got {strides}, {padding}, {w.shape[:2]}"
    )
  return conv_transpose(dy, wt, stride=strides[0], padding=plh, precision=precision, output_size=(h, w_))


def cpu_grad_modes(x_shape, w_shape, strides) -> tuple[str, str]:
  """(input-gradient, weight-gradient) modes of `_conv_cpu` for one layer, from the per-layer measurements in
  benchmarks/results/cpu_tuning.md: XLA:CPU's weight gradient is slow for stride 1 (10-20x) and fine for the
  strided encoder layers, its input gradient slow for strided layers (up to 15x) and fine for stride 1."""
  del x_shape, w_shape
  return ("xla", "im2col") if tuple(strides) == (1, 1) else ("explicit", "xla")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv_cpu(x, w, strides, padding, precision, igrad=None, wgrad=None):
  """XLA's forward convolution with the gradients of `conv_input_grad` / `conv_weight_grad` (modes from
  `cpu_grad_modes` unless given; 'xla' keeps XLA's own)."""
  return _conv(x, w, strides, padding, precision)


def _conv_cpu_fwd(x, w, strides, padding, precision, igrad, wgrad):
  return _conv(x, w, strides, padding, precision), (x, w)


def _conv_cpu_bwd(strides, padding, precision, igrad, wgrad, res, dy):
  x, w = res
  auto_i, auto_w = cpu_grad_modes(x.shape, w.shape, strides)
  igrad, wgrad = igrad or auto_i, wgrad or auto_w
  if igrad == "xla":
    (dx,) = jax.vjp(lambda a: _conv(a, w, strides, padding, precision), x)[1](dy)
  else:
    dx = conv_input_grad(dy, w, x.shape, strides, padding, precision)
  if wgrad == "xla":
    (dw,) = jax.vjp(lambda b: _conv(x, b, strides, padding, precision), w)[1](dy)
  else:
    dw = conv_weight_grad(x, dy, w.shape, strides, padding, precision, mode=wgrad)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


# The keyword arguments of `lax.conv_general_dilated` a plain convolution may be given (at their defaults).
_OPTIONS = frozenset(
  ("lhs_dilation", "rhs_dilation", "feature_group_count", "batch_group_count", "preferred_element_type", "out_sharding")
)


def _plain_2d(lhs, rhs, dimension_numbers, options: dict) -> bool:
  """Whether a convolution is a plain 2-D NHWC/HWIO one: no dilation, groups, element type or sharding."""
  dilations = tuple(options.get("lhs_dilation") or ()) + tuple(options.get("rhs_dilation") or ())
  return (
    lhs.ndim == 4
    and set(options) <= _OPTIONS
    and options.get("feature_group_count", 1) == 1
    and options.get("batch_group_count", 1) == 1
    and options.get("preferred_element_type") is None
    and options.get("out_sharding") is None
    and all(d == 1 for d in dilations)
    and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  )


def conv_general_dilated(
  lhs, rhs, window_strides, padding, *, dimension_numbers=None, precision=None, **options
) -> Array:
  """`lax.conv_general_dilated` with this module's rewrites, for `nnx.Conv(conv_general_dilated=...)`.

  A plain 2-D NHWC/HWIO convolution (no dilation, groups or sharding) with a 1x1 output is one matrix
  product; on the CPU backend the others get `_conv_cpu`'s gradients. Anything else, and every other
  convolution off the CPU, is exactly `lax.conv_general_dilated(...)` with the arguments given.
  """
  if not _plain_2d(lhs, rhs, dimension_numbers, options):
    return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, dimension_numbers=dimension_numbers, precision=precision, **options
    )
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  out = [conv_output_size(lhs.shape[1 + a], rhs.shape[a], strides[a], *pads[a]) for a in range(2)]
  if FAST_PATHS["matmul"] and out == [1, 1] and min(min(p) for p in pads) >= 0:
    return conv_to_single_pixel(lhs, rhs, pads, precision)
  if _on_cpu("cpu_grads") and (
    strides[0] == strides[1] and pads[0][0] == pads[1][0] and rhs.shape[0] == rhs.shape[1] or strides == (1, 1)
  ):
    return _conv_cpu(lhs, rhs, strides, pads, precision)
  return lax.conv_general_dilated(
    lhs, rhs, window_strides, padding, dimension_numbers=dimension_numbers, precision=precision, **options
  )


class ConvTranspose(nnx.Module):
  """Transposed convolution with PyTorch `ConvTranspose2d` semantics, computed in sub-pixel form.

  The kernel parameter has shape (k, k, C_in, C_out); initialisation matches PyTorch's default
  (kaiming-uniform with a=sqrt(5) on fan_in = C_out*k*k, bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = True,
    dtype=None,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.stride = stride
    self.padding = padding
    self.dtype = dtype
    fan_in = out_features * kernel_size * kernel_size  # PyTorch's fan_in for ConvTranspose weights
    bound = 1.0 / math.sqrt(fan_in)
    shape = (kernel_size, kernel_size, in_features, out_features)
    self.kernel = nnx.Param(jax.random.uniform(rngs.params(), shape, param_dtype, -bound, bound))
    self.bias = (
      nnx.Param(jax.random.uniform(rngs.params(), (out_features,), param_dtype, -bound, bound)) if use_bias else None
    )

  def __call__(self, x: Array) -> Array:
    dtype = self.dtype or x.dtype
    y = conv_transpose(x.astype(dtype), self.kernel[...].astype(dtype), stride=self.stride, padding=self.padding)
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return y
