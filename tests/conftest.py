"""Shared test fixtures: paths to the real defect images beside the checkout, small RNG helpers."""

from __future__ import annotations

import os
import pathlib

import pytest

# Keep TensorFlow (imported lazily by the input pipeline) quiet and off any GPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """../shared/data (real defect images); skips the test where the folder is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real defect images not found at {SHARED_DATA} (the ../shared/data folder beside the checkout)")
  return SHARED_DATA


@pytest.fixture(scope="session")
def magnetic_tile(shared_data) -> pathlib.Path:
  path = shared_data / "magnetic_tile" / "images"
  if not path.is_dir():
    pytest.skip(f"magnetic_tile images not found at {path}")
  return path
