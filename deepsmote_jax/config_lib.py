"""Building blocks of the `get_config()` files (ml_collections ConfigDicts, overridable from the command line)."""
from __future__ import annotations

import ml_collections


def autoencoder_config(*, preset: str, channels: int, epochs: int, batch_size: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(preset=preset, channels=channels))
  c.data = ml_collections.ConfigDict(dict(
      source="folder", root="", name="", split="train", data_dir="", resize="resize", on_error="raise",
      min_per_class=2, classes=(), include_intermediate=False))
  c.train = ml_collections.ConfigDict(dict(
      epochs=epochs, batch_size=batch_size, learning_rate=2e-4, penalty="reference", penalty_weight=1.0,
      penalty_sample_size=100, steps_per_call=10, compute_dtype="auto", seed=0))
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=3))
  c.workdir = f"runs/{preset}"
  return c


def make_local(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config to a quick CPU run of the same code path (the big_vision 'local' variant)."""
  c.train.epochs = 2
  c.train.batch_size = 8
  c.train.penalty_sample_size = 8
  c.train.steps_per_call = 2
  c.checkpoint.every_steps = 4
