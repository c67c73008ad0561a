"""The sub-pixel transposed convolution equals PyTorch's ConvTranspose2d definition; the matrix-product and
CPU-gradient rewrites of `layers` equal the plain XLA convolutions (forward and gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepsmote_jax.models import layers, presets
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
      y[:, th : th + (h - 1) * stride + 1 : stride, tw : tw + (wd - 1) * stride + 1 : stride] += contrib
  out_h = conv_transpose_output_size(h, k, stride, padding)
  out_w = conv_transpose_output_size(wd, k, stride, padding)
  return y[:, padding : padding + out_h, padding : padding + out_w]


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
  x = rng.uniform(-1, 1, (2, size, size + 1, 3)).astype(np.float32)  # non-square catches swapped axes
  w = rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
  got = np.asarray(
    conv_transpose(jnp.asarray(x), jnp.asarray(w), stride=stride, padding=padding, precision=jax.lax.Precision.HIGHEST)
  )
  want = direct_conv_transpose(x, w, stride, padding)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,kernel,stride,padding", _preset_layers() + [(5, 5, 3, 2), (6, 3, 1, 1), (4, 2, 2, 0)])
def test_every_form_matches_definition(monkeypatch, size, kernel, stride, padding):
  """The sub-pixel form (what runs off the CPU) and the scatter form (the CPU's) each equal the definition,
  whichever backend runs the tests."""
  rng = np.random.default_rng(size * 100 + kernel * 10 + stride + padding)
  x = rng.uniform(-1, 1, (2, size, size + 1, 3)).astype(np.float32)
  w = rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
  want = direct_conv_transpose(x, w, stride, padding)
  got = layers.conv_transpose_scatter(
    jnp.asarray(x), jnp.asarray(w), stride=stride, padding=padding, precision=jax.lax.Precision.HIGHEST
  )
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  for rewrite in layers.FAST_PATHS:
    monkeypatch.setitem(layers.FAST_PATHS, rewrite, False)
  got = conv_transpose(
    jnp.asarray(x), jnp.asarray(w), stride=stride, padding=padding, precision=jax.lax.Precision.HIGHEST
  )
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


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


# --- The rewrites of `layers.conv_general_dilated` / `conv_transpose` equal the plain XLA computation. ---

NHWC = ("NHWC", "HWIO", "NHWC")
HIGHEST = jax.lax.Precision.HIGHEST


def _encoder_layers():
  """Every (input size, kernel, stride, padding) that a preset's encoder uses (sizes capped for speed)."""
  cases = set()
  for spec in presets.PRESETS.values():
    size = spec.image_size
    for c in spec.encoder:
      out = presets.conv_out(size, c)
      cases.add((size if out == 1 else min(size, 14), c.kernel, c.stride, c.padding))
      size = out
  return sorted(cases)


def _plain(fn):
  """`fn` traced with every rewrite off (the code before them)."""

  def wrapped(*args):
    saved = dict(layers.FAST_PATHS)
    layers.FAST_PATHS.update(matmul=False, cpu_scatter=False, cpu_grads=False)
    try:
      return fn(*args)
    finally:
      layers.FAST_PATHS.update(saved)

  return wrapped


def _value_and_grads(fn, x, w, ct):
  y = fn(x, w)
  gx, gw = jax.grad(lambda a, b: jnp.vdot(fn(a, b), ct), (0, 1))(x, w)
  return y, gx, gw


def _assert_close(got, want, rtol=2e-5):
  for g, e in zip(got, want):
    assert g.shape == e.shape and g.dtype == e.dtype
    scale = float(jnp.max(jnp.abs(e))) + 1e-30
    np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("wgrad", ["taps", "im2col", "patches"])
@pytest.mark.parametrize(
  "size,kernel,stride,padding",
  _encoder_layers()
  + [(5, 3, 1, 1), (6, 4, 2, 0), (7, 3, 3, 1), (9, 4, 2, 1), (5, 5, 2, 0), (4, 4, 1, 0), (6, 3, 2, 2)],
)
def test_conv_matches_lax(monkeypatch, size, kernel, stride, padding, wgrad):
  """Forward, input and weight gradients of `conv_general_dilated` (1x1 matrix product, CPU gradients) equal
  `lax.conv_general_dilated`'s, for every encoder layer shape and some odd ones (non-square input)."""
  monkeypatch.setattr(layers, "cpu_grad_modes", lambda *_: ("explicit", wgrad))
  rng = np.random.default_rng(size * 1000 + kernel * 100 + stride * 10 + padding)
  x = jnp.asarray(rng.uniform(-1, 1, (2, size, size + (0 if size <= kernel else 1), 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 5)), jnp.float32)
  pads = ((padding, padding), (padding, padding))
  want_fn = lambda a, b: jax.lax.conv_general_dilated(
    a, b, (stride, stride), pads, dimension_numbers=NHWC, precision=HIGHEST
  )
  got_fn = lambda a, b: layers.conv_general_dilated(
    a, b, (stride, stride), pads, dimension_numbers=NHWC, precision=HIGHEST
  )
  ct = jnp.asarray(rng.normal(size=want_fn(x, w).shape), jnp.float32)
  _assert_close(
    jax.jit(lambda a, b: _value_and_grads(got_fn, a, b, ct))(x, w),
    jax.jit(lambda a, b: _value_and_grads(want_fn, a, b, ct))(x, w),
  )


def test_single_pixel_conv_is_one_matmul():
  """A 1x1 output (deepsmote_mnist's last encoder layer) traces to a dot, no convolution."""
  x, w = jnp.ones((2, 3, 3, 4)), jnp.ones((4, 4, 4, 6))
  jaxpr = str(
    jax.make_jaxpr(lambda a, b: layers.conv_general_dilated(a, b, (2, 2), ((1, 1), (1, 1)), dimension_numbers=NHWC))(
      x, w
    )
  )
  assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr
  jaxpr = str(jax.make_jaxpr(lambda a, b: conv_transpose(a, b, stride=1, padding=0))(jnp.ones((2, 1, 1, 4)), w))
  assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr


@pytest.mark.parametrize("form", ["scatter", "subpixel taps", "subpixel im2col"])
@pytest.mark.parametrize("size,kernel,stride,padding", _preset_layers() + [(1, 4, 1, 0), (1, 4, 2, 1), (5, 3, 2, 1)])
def test_conv_transpose_rewrites_match_plain(monkeypatch, size, kernel, stride, padding, form):
  """`conv_transpose` with the rewrites (1x1 input as one product; on the CPU the scatter form, or the
  sub-pixel form with custom gradients) equals the plain sub-pixel form: forward and gradients with respect
  to the input and the kernel."""
  monkeypatch.setitem(layers.FAST_PATHS, "cpu_scatter", form == "scatter")
  monkeypatch.setattr(layers, "cpu_grad_modes", lambda *_: ("explicit", form.split()[-1]))
  rng = np.random.default_rng(size * 1000 + kernel * 100 + stride * 10 + padding)
  x = jnp.asarray(rng.uniform(-1, 1, (2, size, size, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float32)
  fn = lambda a, b: conv_transpose(a, b, stride=stride, padding=padding, precision=HIGHEST)
  ct = jnp.asarray(rng.normal(size=fn(x, w).shape), jnp.float32)
  _assert_close(
    jax.jit(lambda a, b: _value_and_grads(fn, a, b, ct))(x, w),
    jax.jit(_plain(lambda a, b: _value_and_grads(fn, a, b, ct)))(x, w),
  )
  np.testing.assert_allclose(
    np.asarray(fn(x, w)), direct_conv_transpose(np.asarray(x), np.asarray(w), stride, padding), rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize("size,kernel,stride,padding,out", [(4, 4, 2, 1, 9), (7, 3, 2, 1, 14), (3, 4, 2, 1, 7)])
def test_conv_transpose_output_size(size, kernel, stride, padding, out):
  """`output_size` larger than (in-1)*s - 2p + k keeps the definition's values there (PyTorch output_padding)."""
  rng = np.random.default_rng(out)
  x = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  w = rng.normal(size=(kernel, kernel, 3, 2)).astype(np.float32)
  got = np.asarray(
    conv_transpose(
      jnp.asarray(x), jnp.asarray(w), stride=stride, padding=padding, precision=HIGHEST, output_size=(out, out)
    )
  )
  full = direct_conv_transpose(x, w, stride, 0)  # uncropped: index o + padding
  want = np.zeros((2, out, out, 2))
  avail = min(out, full.shape[1] - padding)
  want[:, :avail, :avail] = full[:, padding : padding + avail, padding : padding + avail]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_off_cpu_the_code_is_unchanged(monkeypatch):
  """Off the CPU backend only the exact 1x1 products apply: every other convolution traces to exactly the
  plain program (same jaxpr) as before the rewrites."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  x, w = jnp.ones((2, 7, 7, 3)), jnp.ones((4, 4, 3, 5))
  pads = ((1, 1), (1, 1))
  grads = lambda f: jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2), (0, 1))
  new = lambda a, b: layers.conv_general_dilated(a, b, (2, 2), pads, dimension_numbers=NHWC)
  old = lambda a, b: jax.lax.conv_general_dilated(a, b, (2, 2), pads, dimension_numbers=NHWC)
  assert str(jax.make_jaxpr(grads(new))(x, w)) == str(jax.make_jaxpr(grads(old))(x, w))
  ct = lambda a, b: conv_transpose(a, b, stride=1, padding=0)
  assert str(jax.make_jaxpr(grads(ct))(x, w)) == str(jax.make_jaxpr(_plain(grads(ct)))(x, w))
  assert "custom_vjp" not in str(jax.make_jaxpr(grads(ct))(x, w))


def test_cpu_forms_are_used_on_cpu():
  """On the CPU backend a strided convolution's gradients come from the custom rule and a transposed
  convolution is the scatter form (no convolution at all)."""
  if jax.default_backend() != "cpu":
    pytest.skip("CPU backend only")
  x, w = jnp.ones((2, 7, 7, 3)), jnp.ones((4, 4, 3, 5))
  grads = jax.grad(
    lambda a, b: jnp.sum(layers.conv_general_dilated(a, b, (2, 2), ((1, 1), (1, 1)), dimension_numbers=NHWC) ** 2),
    (0, 1),
  )
  assert "lhs_dilation=(2, 2)" in str(jax.make_jaxpr(_plain(grads))(x, w))  # XLA's input gradient
  assert "lhs_dilation=(2, 2)" not in str(jax.make_jaxpr(grads)(x, w))
  jaxpr = str(
    jax.make_jaxpr(jax.grad(lambda a, b: jnp.sum(conv_transpose(a, b, stride=2, padding=1) ** 2), (0, 1)))(x, w)
  )
  assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr


def test_nnx_conv_keeps_its_parameters():
  """`nnx.Conv(conv_general_dilated=layers.conv_general_dilated)` has nnx.Conv's parameters and values."""
  kw = dict(strides=2, padding=((1, 1), (1, 1)), use_bias=False)
  new = nnx.Conv(3, 5, (4, 4), conv_general_dilated=layers.conv_general_dilated, rngs=nnx.Rngs(0), **kw)
  old = nnx.Conv(3, 5, (4, 4), rngs=nnx.Rngs(0), **kw)
  assert jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(new))) == jax.tree.map(
    jnp.shape, nnx.to_pure_dict(nnx.state(old))
  )
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
  np.testing.assert_allclose(np.asarray(new(x)), np.asarray(old(x)), rtol=1e-5, atol=1e-5)
