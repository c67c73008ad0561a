"""Defect classifiers chosen by name: Keras-equivalent InceptionV3, ResNet50, Xception, EfficientNet-B0/B5
and a small CNN for CPU runs. Every model is `Model(num_classes, *, in_channels, include_top, dtype, rngs)`
with `model(x, train=...)` -> logits (InceptionV3 with `aux_head=True` returns (logits, aux) when training).
"""
from __future__ import annotations

import importlib
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

# name -> (module, constructor, smallest input size, Keras weight loader available)
_REGISTRY: dict[str, tuple[str, str, int]] = {
    "inception_v3": ("inception_v3", "InceptionV3", 75),
    "resnet50": ("resnet", "ResNet50", 32),
    "xception": ("xception", "Xception", 71),
    "efficientnet_b0": ("efficientnet", "EfficientNetB0", 32),
    "efficientnet_b5": ("efficientnet", "EfficientNetB5", 32),
    "small_cnn": ("small_cnn", "SmallCNN", 8),
}
NAMES = tuple(_REGISTRY)


def _module(name: str):
  if name not in _REGISTRY:
    raise ValueError(f"unknown classifier {name!r} (model.name); known: {list(_REGISTRY)}")
  return importlib.import_module(f"deepsmote_jax.models.classifiers.{_REGISTRY[name][0]}")


def min_image_size(name: str) -> int:
  _module(name)
  return _REGISTRY[name][2]


def build_classifier(name: str, num_classes: int, *, in_channels: int = 3, image_size: int | None = None,
                     dtype=jnp.float32, seed: int = 0, **kwargs) -> nnx.Module:
  """Builds a classifier by registry name; checks the input size the architecture supports."""
  module = _module(name)
  if image_size is not None and image_size < _REGISTRY[name][2]:
    raise ValueError(f"{name} needs images of at least {_REGISTRY[name][2]}x{_REGISTRY[name][2]}, "
                     f"got image_size={image_size}")
  if num_classes < 2:
    raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
  ctor = getattr(module, _REGISTRY[name][1])

  def make():
    return ctor(num_classes, in_channels=in_channels, dtype=dtype, rngs=nnx.Rngs(params=seed, dropout=seed + 1),
                **kwargs)

  # Initialising eagerly compiles one tiny program per kernel shape (tens of seconds for InceptionV3 on a
  # CPU); one jitted initialisation compiles once.
  graphdef, _ = nnx.split(nnx.eval_shape(make))
  state = jax.jit(lambda: nnx.split(make())[1])()
  return nnx.merge(graphdef, state)


def keras_loader(name: str) -> Callable:
  """`load_keras_weights(model, keras_model_or_path, *, skip_top=False)` of the architecture."""
  module = _module(name)
  if not hasattr(module, "load_keras_weights"):
    raise ValueError(f"{name} has no Keras counterpart to load weights from")
  return module.load_keras_weights
