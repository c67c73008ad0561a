"""Shared test fixtures: paths to the real defect images beside the checkout, small RNG helpers."""

from __future__ import annotations

import os
import pathlib
import tempfile

import jax
import pytest

# Keep TensorFlow (imported lazily by the input pipeline) quiet and off any GPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# One persistent XLA compilation cache for the test session (the xdist workers inherit the folder from the
# controller): tests that train the same small model several times -- resume, overwrite, the pipeline's
# seeds -- compile it once. Compiled code is the same either way, so results do not change.
os.environ.setdefault("DEEPSMOTE_TEST_XLA_CACHE", tempfile.mkdtemp(prefix="deepsmote_jax_test_xla_"))
jax.config.update("jax_compilation_cache_dir", os.environ["DEEPSMOTE_TEST_XLA_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

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
