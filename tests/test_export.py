"""Exported encoder/decoder: a directory that loads back to the same model; bad paths fail clearly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepsmote_jax.export import export_autoencoder, load_autoencoder
from deepsmote_jax.models.autoencoder import build_autoencoder
from deepsmote_jax.train.autoencoder import decode_codes, encode_images


def test_export_roundtrip(tmp_path):
  model = build_autoencoder("micro_16", seed=3)
  path = export_autoencoder(model, tmp_path / "ae", class_names=["OK", "NG"], extra={"note": "test"})
  loaded, meta = load_autoencoder(path)
  assert meta["class_names"] == ["OK", "NG"] and meta["spec"]["name"] == "micro_16" and meta["note"] == "test"
  x = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 1)).astype(np.uint8)
  np.testing.assert_array_equal(encode_images(model, x), encode_images(loaded, x))
  codes = encode_images(model, x)
  np.testing.assert_array_equal(decode_codes(model, codes), decode_codes(loaded, codes))
  assert not list(tmp_path.glob(".ae.tmp-*"))   # no temporary directory left behind


def test_load_rejects_missing_and_foreign_directories(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    load_autoencoder(tmp_path / "nope")
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "meta.json").write_text(json.dumps({"format": "something-else"}))
  with pytest.raises(ValueError, match="not an exported deepsmote_jax autoencoder"):
    load_autoencoder(tmp_path / "other")
