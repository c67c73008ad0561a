"""Layer tables of the DeepSMOTE encoder/decoder presets.

A table is plain data (no JAX), so the Flax models, the PyTorch baseline in `benchmarks/` and the
`summary` printer all build from the same description.

Encoder: convolutions without bias, BatchNorm from the second convolution on, LeakyReLU(0.2), then
flatten and a Linear layer to the latent code. Decoder: Linear + ReLU to a (h, w, c) map, transposed
convolutions with bias (PyTorch `ConvTranspose2d` semantics), BatchNorm + ReLU after each but the last,
Tanh last.

`amoled_dent_200` and `amoled_scratch_396` reproduce the AMOLED paper's Fig. 3 and Fig. 5. The figures give
layer types, output shapes and parameter counts; kernel/stride/padding per layer follow from them (4×4
stride-2 pad-1 convolutions on even sizes, 3×3 stride-2 pad-1 on odd sizes, a 4×4 valid convolution from
4×4 to 1×1), and every count is checked in `tests/test_autoencoder.py`:

* Fig. 3 (200×200, latent 512): encoder 2,759,264 parameters with a 1-channel input (the first
  convolution has 1×8×4×4 = 128 weights), decoder 2,988,395 with a 3-channel output: the figure encodes
  grayscale and decodes RGB. `get_preset('amoled_dent_200', channels=1, out_channels=3)` is that model
  exactly (both totals in one model); it trains with the grayscale target broadcast to the three output
  channels, as PyTorch's MSE broadcasts it. By default `out_channels` follows `channels` (default 3).
* Fig. 5 (396×396×1, latent 1024): encoder 11,030,112, decoder 11,029,097.

`deepsmote_mnist` (28×28×1, latent 300) is the DeepSMOTE paper's released code (dim_h = 64). The released
code has no CIFAR model; `deepsmote_cifar` (32×32×3, latent 600) takes the encoder its own comment names
for "3d and 32 by 32" (the fourth convolution 4×4 stride 1 without padding, 4×4 -> 1×1, so the Linear
layer sees 512 values) and, as this project's variant, a decoder from a 9×9 map (9 -> 12 -> 15 -> 32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """One (transposed) convolution: output channels, square kernel, stride and padding."""

  features: int
  kernel: int
  stride: int
  padding: int


@dataclasses.dataclass(frozen=True)
class AutoencoderSpec:
  """Everything that defines an encoder/decoder pair."""

  name: str
  image_size: int
  channels: int
  latent_dim: int
  encoder: tuple[ConvSpec, ...]
  decoder_input: tuple[int, int, int]  # (h, w, c) the decoder's Linear layer produces
  decoder: tuple[ConvSpec, ...]  # the last entry's `features` is replaced by `decoder_channels`
  out_channels: int | None = None  # decoder output channels; None: the same as `channels`

  @property
  def decoder_channels(self) -> int:
    return self.out_channels or self.channels

  def replace(self, **changes) -> AutoencoderSpec:
    return dataclasses.replace(self, **changes)


def conv_out(size: int, c: ConvSpec) -> int:
  """Output size of a convolution (floor division, as PyTorch and XLA)."""
  return (size + 2 * c.padding - c.kernel) // c.stride + 1


def conv_transpose_out(size: int, c: ConvSpec) -> int:
  """Output size of a PyTorch-style transposed convolution: (in-1)*stride - 2*pad + kernel."""
  return (size - 1) * c.stride - 2 * c.padding + c.kernel


def _convs(rows: Sequence[tuple[int, int, int, int]]) -> tuple[ConvSpec, ...]:
  return tuple(ConvSpec(*r) for r in rows)


PRESETS: dict[str, AutoencoderSpec] = {
  spec.name: spec
  for spec in (
    # AMOLED paper, Fig. 3: round dents on circuits, 200x200 crops.
    AutoencoderSpec(
      name="amoled_dent_200",
      image_size=200,
      channels=3,
      latent_dim=512,
      encoder=_convs(
        [
          (8, 4, 2, 1),  # 100
          (16, 4, 2, 1),  # 50
          (32, 4, 2, 1),  # 25
          (64, 3, 2, 1),  # 13
          (128, 3, 2, 1),  # 7
          (256, 3, 2, 1),  # 4
          (512, 4, 1, 0),  # 1
        ]
      ),
      decoder_input=(1, 1, 512),
      decoder=_convs(
        [
          (256, 4, 1, 0),  # 4
          (128, 4, 1, 0),  # 7
          (64, 3, 2, 1),  # 13
          (32, 3, 2, 1),  # 25
          (16, 4, 2, 1),  # 50
          (8, 4, 2, 1),  # 100
          (3, 4, 2, 1),  # 200
        ]
      ),
    ),
    # AMOLED paper, Fig. 5: line scratches on protective film, 396x396 grayscale.
    AutoencoderSpec(
      name="amoled_scratch_396",
      image_size=396,
      channels=1,
      latent_dim=1024,
      encoder=_convs(
        [
          (8, 4, 2, 1),  # 198
          (16, 4, 2, 1),  # 99
          (32, 3, 2, 1),  # 50
          (64, 4, 2, 1),  # 25
          (128, 3, 2, 1),  # 13
          (256, 3, 2, 1),  # 7
          (512, 3, 2, 1),  # 4
          (1024, 4, 1, 0),  # 1
        ]
      ),
      decoder_input=(1, 1, 1024),
      decoder=_convs(
        [
          (512, 4, 1, 0),  # 4
          (256, 3, 2, 1),  # 7
          (128, 3, 2, 1),  # 13
          (64, 3, 2, 1),  # 25
          (32, 4, 2, 1),  # 50
          (16, 3, 2, 1),  # 99
          (8, 4, 2, 1),  # 198
          (1, 4, 2, 1),  # 396
        ]
      ),
    ),
    # DeepSMOTE paper / released code, MNIST and Fashion-MNIST.
    AutoencoderSpec(
      name="deepsmote_mnist",
      image_size=28,
      channels=1,
      latent_dim=300,
      encoder=_convs([(64, 4, 2, 1), (128, 4, 2, 1), (256, 4, 2, 1), (512, 4, 2, 1)]),  # 14 7 3 1
      decoder_input=(7, 7, 512),
      decoder=_convs([(256, 4, 1, 0), (128, 4, 1, 0), (1, 4, 2, 0)]),
    ),  # 10 13 28
    # DeepSMOTE released code, CIFAR-10 / SVHN.
    AutoencoderSpec(
      name="deepsmote_cifar",
      image_size=32,
      channels=3,
      latent_dim=600,
      encoder=_convs([(64, 4, 2, 1), (128, 4, 2, 1), (256, 4, 2, 1), (512, 4, 1, 0)]),  # 16 8 4 1
      decoder_input=(9, 9, 512),
      decoder=_convs([(256, 4, 1, 0), (128, 4, 1, 0), (3, 4, 2, 0)]),
    ),  # 12 15 32
    # A few-second CPU preset for tests and the default quick run (64x64).
    AutoencoderSpec(
      name="tiny_64",
      image_size=64,
      channels=1,
      latent_dim=32,
      encoder=_convs([(8, 4, 2, 1), (16, 4, 2, 1), (32, 4, 2, 1), (64, 4, 2, 1)]),  # 32 16 8 4
      decoder_input=(4, 4, 64),
      decoder=_convs([(32, 4, 2, 1), (16, 4, 2, 1), (8, 4, 2, 1), (1, 4, 2, 1)]),
    ),  # 8 16 32 64
    # tiny_64 widened (32-256 channels, latent 256), so that thin structure such as a scratch can survive the code.
    AutoencoderSpec(
      name="wide_64",
      image_size=64,
      channels=1,
      latent_dim=256,
      encoder=_convs([(32, 4, 2, 1), (64, 4, 2, 1), (128, 4, 2, 1), (256, 4, 2, 1)]),  # 32 16 8 4
      decoder_input=(4, 4, 256),
      decoder=_convs([(128, 4, 2, 1), (64, 4, 2, 1), (32, 4, 2, 1), (1, 4, 2, 1)]),
    ),  # 8 16 32 64
    # 16x16: the smallest preset, for end-to-end tests of the whole machinery.
    AutoencoderSpec(
      name="micro_16",
      image_size=16,
      channels=1,
      latent_dim=8,
      encoder=_convs([(4, 4, 2, 1), (8, 4, 2, 1)]),  # 8 4
      decoder_input=(4, 4, 8),
      decoder=_convs([(4, 4, 2, 1), (1, 4, 2, 1)]),
    ),  # 8 16
  )
}


def get_preset(name: str, **overrides) -> AutoencoderSpec:
  """A preset by name, optionally with `channels`, `latent_dim`, ... replaced."""
  if name not in PRESETS:
    raise ValueError(f"unknown autoencoder preset {name!r}; known: {sorted(PRESETS)}")
  spec = PRESETS[name]
  return spec.replace(**overrides) if overrides else spec


def encoder_shapes(spec: AutoencoderSpec, channels: int | None = None) -> list[tuple[int, int, int]]:
  """(h, w, c) after each encoder convolution."""
  size = spec.image_size
  shapes = []
  for c in spec.encoder:
    size = conv_out(size, c)
    shapes.append((size, size, c.features))
  return shapes


def decoder_shapes(spec: AutoencoderSpec) -> list[tuple[int, int, int]]:
  """(h, w, c) after each transposed convolution; the last has `spec.decoder_channels` channels."""
  h, w, _ = spec.decoder_input
  shapes = []
  for i, c in enumerate(spec.decoder):
    last = i == len(spec.decoder) - 1
    h, w = conv_transpose_out(h, c), conv_transpose_out(w, c)
    shapes.append((h, w, spec.decoder_channels if last else c.features))
  return shapes


def validate(spec: AutoencoderSpec) -> None:
  """Raises ValueError (naming the setting) if the table cannot map image_size -> latent -> image_size."""
  for name, value in (
    ("image_size", spec.image_size),
    ("channels", spec.channels),
    ("latent_dim", spec.latent_dim),
    ("out_channels", spec.decoder_channels),
  ):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"autoencoder preset {spec.name!r}: {name} must be a positive integer, got {value!r}")
  size = spec.image_size
  for i, c in enumerate(spec.encoder):
    nxt = conv_out(size, c)
    if nxt < 1:
      raise ValueError(
        f"autoencoder preset {spec.name!r}: image_size={spec.image_size} is too small for encoder "
        f"layer {i + 1} (input {size}x{size}, kernel {c.kernel}, stride {c.stride}, padding {c.padding})"
      )
    size = nxt
  out = decoder_shapes(spec)[-1]
  if out[:2] != (spec.image_size, spec.image_size):
    raise ValueError(
      f"autoencoder preset {spec.name!r}: the decoder table produces {out[0]}x{out[1]} images but image_size="
      f"{spec.image_size}; this layer table only supports image_size={decoder_shapes(spec)[-1][0]} "
      f"(choose another preset or set model.image_size accordingly)"
    )
