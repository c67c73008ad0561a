"""Presets: parameter counts and output shapes of the paper's tables; summary; bad settings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepsmote_jax.models import layers, presets
from deepsmote_jax.models.autoencoder import Autoencoder, build_autoencoder, count_params, summary


def _abstract(spec):
  """Builds the model without allocating real weights (shape inference only)."""
  return nnx.eval_shape(lambda: Autoencoder(spec, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
  "preset,channels,encoder_params,decoder_channels,decoder_params",
  [
    ("amoled_dent_200", 1, 2_759_264, 3, 2_988_395),  # AMOLED paper, Fig. 3
    ("amoled_scratch_396", 1, 11_030_112, 1, 11_029_097),  # AMOLED paper, Fig. 5
  ],
)
def test_paper_parameter_counts(preset, channels, encoder_params, decoder_channels, decoder_params):
  enc = _abstract(presets.get_preset(preset, channels=channels))
  dec = _abstract(presets.get_preset(preset, channels=decoder_channels))
  assert count_params(enc.encoder) == encoder_params
  assert count_params(dec.decoder) == decoder_params


def test_deepsmote_code_parameter_counts():
  """The released DeepSMOTE code (dim_h=64): MNIST latent 300, CIFAR latent 600 (counts as torchsummary)."""
  mnist = _abstract(presets.get_preset("deepsmote_mnist"))
  conv = 1 * 64 * 16 + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16
  bn = 2 * (128 + 256 + 512)
  assert count_params(mnist.encoder) == conv + bn + 512 * 300 + 300
  dec = (300 * 512 * 49 + 512 * 49) + (512 * 256 * 16 + 256 + 512) + (256 * 128 * 16 + 128 + 256) + (128 * 1 * 16 + 1)
  assert count_params(mnist.decoder) == dec
  # CIFAR: the released code's "3d and 32 by 32" comment -- the last convolution 4x4 -> 1x1, 512 values.
  cifar = _abstract(presets.get_preset("deepsmote_cifar"))
  assert count_params(cifar.encoder) == 3 * 64 * 16 + conv - 64 * 16 + bn + 512 * 600 + 600


def test_fig3_exactly_one_channel_in_three_out():
  """The paper's Fig. 3 as printed: one model, 1-channel encoder (2,759,264) and 3-channel decoder (2,988,395)."""
  model = _abstract(presets.get_preset("amoled_dent_200", channels=1, out_channels=3))
  assert count_params(model.encoder) == 2_759_264 and count_params(model.decoder) == 2_988_395
  x = jax.ShapeDtypeStruct((2, 200, 200, 1), jnp.float32)
  y = nnx.eval_shape(lambda m, x: m(x, train=False), model, x)
  assert y.shape == (2, 200, 200, 3)


PAPER_SHAPES = {
  "amoled_dent_200": (
    [(100, 100, 8), (50, 50, 16), (25, 25, 32), (13, 13, 64), (7, 7, 128), (4, 4, 256), (1, 1, 512)],
    [(4, 4, 256), (7, 7, 128), (13, 13, 64), (25, 25, 32), (50, 50, 16), (100, 100, 8), (200, 200, 3)],
  ),
  "amoled_scratch_396": (
    [(198, 198, 8), (99, 99, 16), (50, 50, 32), (25, 25, 64), (13, 13, 128), (7, 7, 256), (4, 4, 512), (1, 1, 1024)],
    [(4, 4, 512), (7, 7, 256), (13, 13, 128), (25, 25, 64), (50, 50, 32), (99, 99, 16), (198, 198, 8), (396, 396, 1)],
  ),
}


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_shapes_of_every_preset(name):
  spec = presets.get_preset(name)
  model = _abstract(spec)
  x = jax.ShapeDtypeStruct((2, spec.image_size, spec.image_size, spec.channels), jnp.float32)
  z = nnx.eval_shape(lambda m, x: m.encode(x, train=False), model, x)
  y = nnx.eval_shape(lambda m, z: m.decode(z, train=False), model, z)
  assert z.shape == (2, spec.latent_dim)
  assert y.shape == (2, spec.image_size, spec.image_size, spec.channels)
  if name in PAPER_SHAPES:
    enc_shapes, dec_shapes = PAPER_SHAPES[name]
    assert presets.encoder_shapes(spec) == enc_shapes
    assert presets.decoder_shapes(spec) == dec_shapes


def test_summary_lists_layers_and_totals():
  model = build_autoencoder("tiny_64")
  text = summary(model)
  assert "ConvTranspose2d 4x4/2 p1" in text and "(64, 64, 1)" in text
  assert f"Encoder parameters: {count_params(model.encoder):,}" in text
  assert f"Decoder parameters: {count_params(model.decoder):,}" in text


def test_image_size_the_table_cannot_produce_is_rejected():
  with pytest.raises(ValueError, match="image_size=128"):
    build_autoencoder("amoled_dent_200", image_size=128)
  with pytest.raises(ValueError, match="too small"):
    presets.validate(presets.get_preset("amoled_dent_200", image_size=8))
  with pytest.raises(ValueError, match="channels"):
    build_autoencoder("tiny_64", channels=0)
  with pytest.raises(ValueError, match="unknown autoencoder preset"):
    presets.get_preset("nope")


def test_forward_runs_and_is_bounded():
  model = build_autoencoder("tiny_64")
  x = jax.random.uniform(jax.random.key(0), (3, 64, 64, 1), minval=-1, maxval=1)
  y = nnx.jit(lambda m, x: m(x, train=True))(model, x)
  assert y.shape == x.shape and float(jnp.abs(y).max()) <= 1.0


def test_edge_layers_compute_in_their_own_dtype():
  """bf16 inside, float32 in the first convolution and the last transposed convolution; the default is one
  dtype throughout, bit for bit as before the option."""
  mixed = build_autoencoder("micro_16", dtype=jnp.bfloat16, edge_dtype=jnp.float32)
  enc, dec = mixed.encoder, mixed.decoder
  assert [c.dtype for c in enc.convs] == [jnp.float32] + [jnp.bfloat16] * (len(enc.convs) - 1)
  assert [d.dtype for d in dec.deconvs] == [jnp.bfloat16] * (len(dec.deconvs) - 1) + [jnp.float32]
  assert count_params(mixed) == count_params(build_autoencoder("micro_16"))
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 1), minval=-1, maxval=1)
  fwd = nnx.jit(lambda m, x: m(x, train=True))
  # Each edge layer computes in float32 whatever dtype it is given; a middle layer in bf16.
  assert enc.convs[0](x.astype(jnp.bfloat16)).dtype == jnp.float32
  assert enc.convs[1](jnp.zeros((1, 8, 8, 4), jnp.float32)).dtype == jnp.bfloat16
  assert dec.deconvs[-1](jnp.zeros((1, 8, 8, 4), jnp.bfloat16)).dtype == jnp.float32
  y_mixed, y_bf16 = fwd(mixed, x), fwd(build_autoencoder("micro_16", dtype=jnp.bfloat16), x)
  assert y_mixed.dtype == jnp.float32 and float(jnp.abs(y_mixed - y_bf16).max()) < 0.1  # same weights, seed 0
  plain, same = (
    build_autoencoder("micro_16", dtype=jnp.bfloat16),
    build_autoencoder("micro_16", dtype=jnp.bfloat16, edge_dtype=None),
  )
  np.testing.assert_array_equal(np.asarray(fwd(plain, x)), np.asarray(fwd(same, x)))


# The AMOLED presets' two 1x1 special cases (a 4x4 -> 1x1 convolution ending the encoder, a 1x1 -> 4x4
# transposed convolution starting the decoder) in a 16x16 model, so the float64 check stays cheap.
MICRO_1X1 = presets.AutoencoderSpec(
  name="micro_1x1",
  image_size=16,
  channels=1,
  latent_dim=8,
  encoder=(presets.ConvSpec(4, 4, 2, 1), presets.ConvSpec(8, 4, 2, 1), presets.ConvSpec(16, 4, 1, 0)),
  decoder_input=(1, 1, 16),
  decoder=(presets.ConvSpec(8, 4, 1, 0), presets.ConvSpec(4, 4, 2, 1), presets.ConvSpec(1, 4, 2, 1)),
)


@pytest.mark.parametrize(
  "name,overrides",
  [("tiny_64", {}), ("deepsmote_mnist", {}), (MICRO_1X1, {})],
  ids=["tiny_64", "deepsmote_mnist", "micro_1x1"],
)
def test_rewritten_convolutions_keep_parameters_values_and_gradients(monkeypatch, name, overrides):
  """The encoder's convolutions go through `layers.conv_general_dilated` (1x1 output as a matrix product, CPU
  gradients) and the decoder's through the rewritten `conv_transpose` (scatter form on the CPU): the
  parameter tree is the one the plain `nnx.Conv` model has (exports load), and the train-mode output and
  every parameter gradient equal the plain model's. Compared in float64 (the encoder and the decoder each on
  their own, as each casts its output to float32): in float32 both differ from float64 by up to 1e-2 of a
  gradient's scale here (train-mode BatchNorm over a few images amplifies rounding), which would hide a
  small error. micro_1x1 covers both 1x1 special cases of the AMOLED presets."""

  def build(plain: bool):
    with monkeypatch.context() as m:
      if plain:
        m.setattr(layers, "conv_general_dilated", jax.lax.conv_general_dilated)
      return build_autoencoder(name, seed=3, **overrides)

  old, new = build(True), build(False)
  assert jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(new))) == jax.tree.map(
    jnp.shape, nnx.to_pure_dict(nnx.state(old))
  )
  assert old.encoder.convs[0].conv_general_dilated is jax.lax.conv_general_dilated
  assert new.encoder.convs[0].conv_general_dilated is layers.conv_general_dilated
  spec = new.spec

  def outputs_and_grads(model):
    """Encoder and decoder separately (each casts its output to float32), train mode, float64 inside."""
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.tree.map(lambda v: v.astype(jnp.float64), state))
    for _, module in nnx.iter_modules(model):
      if hasattr(module, "dtype"):
        module.dtype = jnp.float64
    keys = jax.random.split(jax.random.key(1), 4)
    x = jax.random.uniform(keys[0], (4, spec.image_size, spec.image_size, spec.channels), jnp.float64, -1, 1)
    z = jax.random.normal(keys[1], (4, spec.latent_dim), jnp.float64)
    ct_z = jax.random.normal(keys[2], (4, spec.latent_dim), jnp.float64)
    ct_y = jax.random.normal(keys[3], x.shape, jnp.float64)

    def loss(m):
      code, image = m.encoder(x, train=True), m.decoder(z, train=True)
      return jnp.vdot(code, ct_z) + jnp.vdot(image, ct_y), (code, image)

    (_, outs), g = nnx.jit(lambda m: nnx.value_and_grad(loss, has_aux=True)(m))(model)
    return outs, nnx.to_pure_dict(g)

  with jax.enable_x64(True):
    got = outputs_and_grads(new)
    with monkeypatch.context() as m:
      for rewrite in layers.FAST_PATHS:
        m.setitem(layers.FAST_PATHS, rewrite, False)
      want = outputs_and_grads(old)
  for g, e in zip(got[0], want[0]):  # float32 outputs: equal up to the final rounding
    np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-6, atol=1e-6)
  # A bias right before a train-mode BatchNorm has a gradient that is zero up to rounding: compare each leaf
  # against its own scale, but no finer than 1e-6 of the largest gradient.
  got, want = jax.tree.map(np.asarray, got), jax.tree.map(np.asarray, want)
  overall = max(float(np.abs(e).max()) for e in jax.tree.leaves(want[1]))
  for (path, g), (_, e) in zip(
    jax.tree_util.tree_leaves_with_path(got[1]), jax.tree_util.tree_leaves_with_path(want[1])
  ):
    assert g.dtype == np.float64
    scale = max(float(np.abs(e).max()), 1e-6 * overall)
    np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=0, atol=1e-9 * scale, err_msg=str(path))
