"""Helpers for copying `keras.applications` weights into the Flax classifiers.

Each architecture module walks its Keras counterpart layer by layer and calls `assign` for every tensor;
mismatches are collected and reported together, naming each tensor, instead of failing on the first one.
Keras (and TensorFlow) are only needed by the caller that loads the Keras model: this module imports neither.
"""
from __future__ import annotations

import numpy as np
from flax import nnx


class WeightMismatchError(ValueError):
  """A weight file does not fit the model; the message lists every mismatched tensor."""


class Assigner:
  """Collects shape mismatches while copying arrays into nnx Variables."""

  def __init__(self, source: str):
    self.source = source
    self.errors: list[str] = []
    self.copied = 0

  def assign(self, variable: nnx.Variable, array, name: str) -> None:
    array = np.asarray(array)
    target_shape = tuple(variable.get_value().shape)
    if tuple(array.shape) != target_shape:
      self.errors.append(f"{name}: weight file has shape {tuple(array.shape)}, model expects {target_shape}")
      return
    variable.set_value(np.asarray(array, dtype=variable.get_value().dtype))
    self.copied += 1

  def missing(self, name: str) -> None:
    self.errors.append(f"{name}: not found in {self.source}")

  def finish(self) -> int:
    if self.errors:
      raise WeightMismatchError(
          f"{len(self.errors)} tensor(s) from {self.source} do not match the model:\n  " + "\n  ".join(self.errors))
    return self.copied
