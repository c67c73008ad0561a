"""DeepSMOTE encoder and decoder (Flax NNX), built from a layer table in `presets.py`.

Parameters and BatchNorm statistics are float32; `dtype` sets the compute dtype (bfloat16 on accelerators) and
`edge_dtype` (default: `dtype`) that of the two layers on the largest maps with the fewest channels, the first
convolution and the last transposed convolution (1-3 image channels at full resolution): a bf16 convolution
there may cost more than its float32 form on a GPU, where channels are padded for tensor cores.
BatchNorm follows PyTorch (momentum 0.1 => Flax momentum 0.9, epsilon 1e-5, unbiased running variance), as
in the released DeepSMOTE code. Images are NHWC floats in [-1, 1]; codes are float32 vectors of `latent_dim`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from deepsmote_jax.models import layers
from deepsmote_jax.models import presets as presets_lib
from deepsmote_jax.models.batch_norm import TorchBatchNorm
from deepsmote_jax.models.layers import ConvTranspose
from deepsmote_jax.models.presets import AutoencoderSpec

BN_SETTINGS = dict(momentum=0.9, epsilon=1e-5)  # PyTorch BatchNorm2d defaults (momentum 0.1) in Flax terms


class Encoder(nnx.Module):
  """Convolutions (no bias) + BatchNorm (from the 2nd on) + LeakyReLU(0.2), flatten, Linear -> latent.

  The convolutions are `nnx.Conv` computed by `layers.conv_general_dilated` (a 1x1 output as one matrix
  product; faster gradients on the CPU backend); parameters are nnx.Conv's own.
  """

  def __init__(self, spec: AutoencoderSpec, *, dtype=jnp.float32, edge_dtype=None, rngs: nnx.Rngs):
    self.dtype = dtype
    self.edge_dtype = edge_dtype or dtype  # the first convolution's
    convs, norms = [], []
    c_in = spec.channels
    for i, c in enumerate(spec.encoder):
      convs.append(
        nnx.Conv(
          c_in,
          c.features,
          (c.kernel, c.kernel),
          strides=c.stride,
          padding=((c.padding, c.padding), (c.padding, c.padding)),
          use_bias=False,
          dtype=self.edge_dtype if i == 0 else dtype,
          conv_general_dilated=layers.conv_general_dilated,
          rngs=rngs,
        )
      )
      norms.append(TorchBatchNorm(c.features, dtype=dtype, rngs=rngs, **BN_SETTINGS) if i > 0 else None)
      c_in = c.features
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    h, w, c = presets_lib.encoder_shapes(spec)[-1]
    self.fc = nnx.Linear(h * w * c, spec.latent_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
    """`mask` (B,) excludes padded rows from the BatchNorm batch statistics (train mode)."""
    x = x.astype(self.edge_dtype)  # each later layer casts its input to its own dtype
    bn_mask = None if mask is None else mask[:, None, None, None]
    for conv, norm in zip(self.convs, self.norms):
      x = conv(x)
      if norm is not None:
        x = norm(x, use_running_average=not train, mask=bn_mask)
      x = nnx.leaky_relu(x, 0.2)
    x = x.reshape(x.shape[0], -1)
    return self.fc(x).astype(jnp.float32)


class Decoder(nnx.Module):
  """Linear + ReLU to a (h, w, c) map, transposed convolutions (+ BatchNorm + ReLU), Tanh last."""

  def __init__(self, spec: AutoencoderSpec, *, dtype=jnp.float32, edge_dtype=None, rngs: nnx.Rngs):
    self.dtype = dtype
    self.edge_dtype = edge_dtype or dtype  # the last transposed convolution's
    self.input_shape = tuple(spec.decoder_input)
    self.fc = nnx.Linear(spec.latent_dim, math.prod(self.input_shape), dtype=dtype, rngs=rngs)
    deconvs, norms = [], []
    c_in = self.input_shape[-1]
    for i, c in enumerate(spec.decoder):
      last = i == len(spec.decoder) - 1
      c_out = spec.decoder_channels if last else c.features
      deconvs.append(
        ConvTranspose(
          c_in, c_out, c.kernel, stride=c.stride, padding=c.padding, dtype=self.edge_dtype if last else dtype, rngs=rngs
        )
      )
      norms.append(None if last else TorchBatchNorm(c_out, dtype=dtype, rngs=rngs, **BN_SETTINGS))
      c_in = c_out
    self.deconvs = nnx.List(deconvs)
    self.norms = nnx.List(norms)

  def __call__(self, z: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
    """`mask` (B,) excludes padded rows from the BatchNorm batch statistics (train mode)."""
    x = nnx.relu(self.fc(z.astype(self.dtype)))
    x = x.reshape((x.shape[0],) + self.input_shape)
    bn_mask = None if mask is None else mask[:, None, None, None]
    for deconv, norm in zip(self.deconvs, self.norms):
      x = deconv(x)
      if norm is not None:
        x = nnx.relu(norm(x, use_running_average=not train, mask=bn_mask))
    return jnp.tanh(x).astype(jnp.float32)


class Autoencoder(nnx.Module):
  """An encoder/decoder pair plus the spec it was built from."""

  def __init__(self, spec: AutoencoderSpec, *, dtype=jnp.float32, edge_dtype=None, rngs: nnx.Rngs):
    presets_lib.validate(spec)
    self.spec = spec
    self.encoder = Encoder(spec, dtype=dtype, edge_dtype=edge_dtype, rngs=rngs)
    self.decoder = Decoder(spec, dtype=dtype, edge_dtype=edge_dtype, rngs=rngs)

  def encode(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    return self.encoder(x, train=train)

  def decode(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    return self.decoder(z, train=train)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    return self.decode(self.encode(x, train=train), train=train)


def build_autoencoder(
  preset: str | AutoencoderSpec, *, seed: int = 0, dtype=jnp.float32, edge_dtype=None, **overrides
) -> Autoencoder:
  """Builds a preset by name (or from a spec), e.g. `build_autoencoder('amoled_dent_200', channels=1)`."""
  spec = presets_lib.get_preset(preset, **overrides) if isinstance(preset, str) else preset.replace(**overrides)
  presets_lib.validate(spec)

  def make():
    return Autoencoder(spec, dtype=dtype, edge_dtype=edge_dtype, rngs=nnx.Rngs(seed))

  # One jitted initialisation instead of one small compiled program per parameter shape (eager init).
  graphdef, _ = nnx.split(nnx.eval_shape(make))
  return nnx.merge(graphdef, jax.jit(lambda: nnx.split(make())[1])())


def count_params(module: nnx.Module) -> int:
  """Trainable parameters (nnx.Param), as the paper's tables and torchsummary count them."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _params_of(*modules) -> int:
  return sum(count_params(m) for m in modules if m is not None)


def summary_rows(model: Autoencoder) -> list[tuple[str, str, int]]:
  """(layer, output shape, parameters) per layer, in the layout of the paper's Fig. 3 / Fig. 5."""
  spec = model.spec
  rows = [("Input", str((spec.image_size, spec.image_size, spec.channels)), 0)]
  for i, ((h, w, c), conv, norm) in enumerate(
    zip(presets_lib.encoder_shapes(spec), model.encoder.convs, model.encoder.norms)
  ):
    cs = spec.encoder[i]
    rows.append((f"Conv2d {cs.kernel}x{cs.kernel}/{cs.stride} p{cs.padding}", str((h, w, c)), _params_of(conv)))
    if norm is not None:
      rows.append(("BatchNorm2d", str((h, w, c)), _params_of(norm)))
    rows.append(("LeakyReLU(0.2)", str((h, w, c)), 0))
  h, w, c = presets_lib.encoder_shapes(spec)[-1]
  rows.append(("Flatten", str((h * w * c,)), 0))
  rows.append(("Linear (latent)", str((spec.latent_dim,)), _params_of(model.encoder.fc)))
  rows.append(("Linear", str((math.prod(spec.decoder_input),)), _params_of(model.decoder.fc)))
  rows.append(("ReLU + reshape", str(tuple(spec.decoder_input)), 0))
  for i, ((h, w, c), deconv, norm) in enumerate(
    zip(presets_lib.decoder_shapes(spec), model.decoder.deconvs, model.decoder.norms)
  ):
    cs = spec.decoder[i]
    rows.append(
      (f"ConvTranspose2d {cs.kernel}x{cs.kernel}/{cs.stride} p{cs.padding}", str((h, w, c)), _params_of(deconv))
    )
    if norm is not None:
      rows.append(("BatchNorm2d + ReLU", str((h, w, c)), _params_of(norm)))
    else:
      rows.append(("Tanh", str((h, w, c)), 0))
  return rows


def summary(model: Autoencoder) -> str:
  """A printable table of layers, output shapes and parameter counts with encoder/decoder totals."""
  rows = summary_rows(model)
  width = max(len(r[0]) for r in rows) + 2
  lines = [
    f"{model.spec.name}: {model.spec.image_size}x{model.spec.image_size}x{model.spec.channels}, "
    f"latent {model.spec.latent_dim}",
    f"{'Layer':<{width}}{'Output shape':<20}{'Param #':>12}",
    "-" * (width + 32),
  ]
  lines += [f"{name:<{width}}{shape:<20}{params:>12,}" for name, shape, params in rows]
  lines += [
    "-" * (width + 32),
    f"Encoder parameters: {count_params(model.encoder):,}",
    f"Decoder parameters: {count_params(model.decoder):,}",
  ]
  return "\n".join(lines)
