"""ELPV from the elpv-dataset package: class counts, intermediate mapping, caches."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("elpv_dataset")

from deepsmote_jax.data import elpv  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope="module")
def cache_dir(request):
  # Persistent across runs (.pytest_cache), so only the first run pays the ~7-20 s decode.
  return str(request.config.cache.mkdir("deepsmote_elpv"))


def test_counts_and_files(cache_dir):
  s = elpv.load_elpv(32, cache_dir=cache_dir)
  assert s.class_names == ["OK", "NG"] and s.counts() == {"OK": 1508, "NG": 715}
  assert s.images.shape == (2223, 32, 32, 1) and s.images.dtype == np.uint8 and s.images.std() > 5
  assert s.files[0] == "elpv/0000.png" or s.files[0].startswith("elpv/")
  assert len(set(s.files)) == len(s)
  p = s.attrs["defect_probability"]
  assert set(np.unique(p[s.labels == 0])) == {0.0} and set(np.unique(p[s.labels == 1])) == {1.0}
  assert set(np.unique(s.attrs["cell_type"])) == {"mono", "poly"}


def test_intermediate_mapping_and_cell_type(cache_dir):
  ok = elpv.load_elpv(32, include_intermediate="ok", cache_dir=cache_dir)
  ng = elpv.load_elpv(32, include_intermediate="ng", cache_dir=cache_dir)
  assert len(ok) == len(ng) == elpv.NUM_IMAGES
  assert ok.counts()["NG"] == 715 and ng.counts()["OK"] == 1508
  assert ok.counts()["OK"] == 1508 + elpv.NUM_IMAGES - 2223 and ng.counts()["NG"] == 715 + elpv.NUM_IMAGES - 2223
  mono = elpv.load_elpv(32, cache_dir=cache_dir, cell_type="mono")
  assert 0 < len(mono) < 2223 and set(mono.attrs["cell_type"]) == {"mono"}
  with pytest.raises(ValueError, match="include_intermediate"):
    elpv.load_elpv(32, include_intermediate=True)


def test_memory_cache_and_channels(cache_dir):
  """A second load of the same size is a memory-cache hit (counted, not timed: this test may run first on its
  xdist worker), and the RGB view repeats the gray channel."""
  a = elpv.load_elpv(32, cache_dir=cache_dir)
  hits = elpv._all_resized.cache_info().hits  # pylint: disable=protected-access
  rgb = elpv.load_elpv(32, channels=3, cache_dir=cache_dir)
  assert elpv._all_resized.cache_info().hits == hits + 1  # pylint: disable=protected-access
  assert rgb.images.shape[-1] == 3 and (rgb.images[..., 0] == a.images[..., 0]).all()
