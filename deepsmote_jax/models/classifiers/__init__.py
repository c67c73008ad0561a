"""Defect classifiers chosen by name: Keras-equivalent InceptionV3, ResNet50, Xception, EfficientNet-B0/B5
and a small CNN for CPU runs. Every model is `Model(num_classes, *, in_channels, include_top, dtype, rngs)`
with `model(x, train=...)` -> logits (InceptionV3 with `aux_head=True` returns (logits, aux) when training).
`load_keras_weights` fills any of the Keras twins from a Keras model or weight file, all or nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from deepsmote_jax.models.classifiers.common import param_count
from deepsmote_jax.models.classifiers.efficientnet import EfficientNet, EfficientNetB0, EfficientNetB5
from deepsmote_jax.models.classifiers.inception_v3 import InceptionV3
from deepsmote_jax.models.classifiers.keras_weights import WeightMismatchError, load_keras_weights
from deepsmote_jax.models.classifiers.resnet import ResNet50
from deepsmote_jax.models.classifiers.small_cnn import SmallCNN
from deepsmote_jax.models.classifiers.xception import Xception

__all__ = [
  "NAMES",
  "build_classifier",
  "load_keras_weights",
  "param_count",
  "WeightMismatchError",
  "EfficientNet",
  "EfficientNetB0",
  "EfficientNetB5",
  "InceptionV3",
  "ResNet50",
  "SmallCNN",
  "Xception",
]

# name -> (constructor, smallest input height/width)
_REGISTRY = {
  "inception_v3": (InceptionV3, InceptionV3.min_size),
  "resnet50": (ResNet50, ResNet50.min_size),
  "xception": (Xception, Xception.min_size),
  "efficientnet_b0": (EfficientNetB0, EfficientNet.min_size),
  "efficientnet_b5": (EfficientNetB5, EfficientNet.min_size),
  "small_cnn": (SmallCNN, SmallCNN.min_size),
}
NAMES = tuple(_REGISTRY)


def build_classifier(
  name: str,
  num_classes: int,
  *,
  in_channels: int = 3,
  image_size: int | None = None,
  dtype=jnp.float32,
  seed: int = 0,
  **kwargs,
) -> nnx.Module:
  """Builds a classifier by registry name; checks the input size the architecture supports."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown classifier {name!r} (model.name); known: {list(_REGISTRY)}")
  ctor, min_size = _REGISTRY[name]
  if image_size is not None and image_size < min_size:
    raise ValueError(f"{name} needs images of at least {min_size}x{min_size}, got image_size={image_size}")
  if num_classes < 2:
    raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")

  def make():
    return ctor(
      num_classes, in_channels=in_channels, dtype=dtype, rngs=nnx.Rngs(params=seed, dropout=seed + 1), **kwargs
    )

  # Initialising eagerly compiles one tiny program per kernel shape (tens of seconds for InceptionV3 on a
  # CPU); one jitted initialisation compiles once.
  graphdef, _ = nnx.split(nnx.eval_shape(make))
  state = jax.jit(lambda: nnx.split(make())[1])()
  return nnx.merge(graphdef, state)
