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
  assert not list(tmp_path.glob(".ae.tmp-*"))  # no temporary directory left behind


def test_export_keeps_the_edge_dtype_and_reads_exports_without_it(tmp_path):
  import jax.numpy as jnp

  mixed = build_autoencoder("micro_16", dtype=jnp.bfloat16, edge_dtype=jnp.float32)
  loaded, meta = load_autoencoder(export_autoencoder(mixed, tmp_path / "mixed"))
  assert (meta["dtype"], meta["edge_dtype"]) == ("bfloat16", "float32")
  assert (loaded.encoder.dtype, loaded.encoder.edge_dtype, loaded.decoder.edge_dtype) == (
    jnp.bfloat16,
    jnp.float32,
    jnp.float32,
  )
  # One dtype throughout: no key written (exports from before the option read the same way).
  _, meta = load_autoencoder(export_autoencoder(build_autoencoder("micro_16"), tmp_path / "plain"))
  assert "edge_dtype" not in meta
  forced, _ = load_autoencoder(tmp_path / "mixed", dtype=jnp.float32)  # an override applies to every layer
  assert forced.encoder.edge_dtype == forced.encoder.dtype == jnp.float32


def test_load_rejects_missing_and_foreign_directories(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    load_autoencoder(tmp_path / "nope")
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "meta.json").write_text(json.dumps({"format": "something-else"}))
  with pytest.raises(ValueError, match="not an exported deepsmote_jax autoencoder"):
    load_autoencoder(tmp_path / "other")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  return export_autoencoder(build_autoencoder("micro_16", seed=1), tmp_path_factory.mktemp("e") / "ae")


def _copy(src, dst):
  import shutil

  shutil.copytree(src, dst)
  return dst


def test_damaged_exports_are_refused_naming_the_folder(exported, tmp_path):
  corrupt = _copy(exported, tmp_path / "corrupt")
  (corrupt / "meta.json").write_text("{not json")
  with pytest.raises(ValueError, match=rf"{corrupt}/meta.json is corrupt"):
    load_autoencoder(corrupt)
  no_arrays = _copy(exported, tmp_path / "no_arrays")
  import shutil

  shutil.rmtree(no_arrays / "arrays")
  with pytest.raises(ValueError, match=rf"{no_arrays}: the arrays/ folder is missing"):
    load_autoencoder(no_arrays)
  # meta.json says latent 9, the arrays hold latent 8: refused before any array is read.
  other_spec = _copy(exported, tmp_path / "other_spec")
  meta = json.loads((other_spec / "meta.json").read_text())
  meta["spec"]["latent_dim"] = 9
  (other_spec / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match=rf"{other_spec}: the stored arrays do not match its meta.json: .*expected"):
    load_autoencoder(other_spec)
  broken_table = _copy(exported, tmp_path / "broken_table")
  meta["spec"] = {"name": "x"}
  (broken_table / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="layer table is damaged"):
    load_autoencoder(broken_table)
