"""Presets: parameter counts and output shapes of the paper's tables; summary; bad settings."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from deepsmote_jax.models import presets
from deepsmote_jax.models.autoencoder import Autoencoder, build_autoencoder, count_params, summary


def _abstract(spec):
  """Builds the model without allocating real weights (shape inference only)."""
  return nnx.eval_shape(lambda: Autoencoder(spec, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("preset,channels,encoder_params,decoder_channels,decoder_params", [
    ("amoled_dent_200", 1, 2_759_264, 3, 2_988_395),      # AMOLED paper, Fig. 3
    ("amoled_scratch_396", 1, 11_030_112, 1, 11_029_097),  # AMOLED paper, Fig. 5
])
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
  cifar = _abstract(presets.get_preset("deepsmote_cifar"))
  assert count_params(cifar.encoder) == 3 * 64 * 16 + conv - 64 * 16 + bn + 2048 * 600 + 600


PAPER_SHAPES = {
    "amoled_dent_200": ([(100, 100, 8), (50, 50, 16), (25, 25, 32), (13, 13, 64), (7, 7, 128), (4, 4, 256),
                         (1, 1, 512)],
                        [(4, 4, 256), (7, 7, 128), (13, 13, 64), (25, 25, 32), (50, 50, 16), (100, 100, 8),
                         (200, 200, 3)]),
    "amoled_scratch_396": ([(198, 198, 8), (99, 99, 16), (50, 50, 32), (25, 25, 64), (13, 13, 128), (7, 7, 256),
                            (4, 4, 512), (1, 1, 1024)],
                           [(4, 4, 512), (7, 7, 256), (13, 13, 128), (25, 25, 64), (50, 50, 32), (99, 99, 16),
                            (198, 198, 8), (396, 396, 1)]),
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
