"""The config files load as `--config` loads them (by path, from any working directory), every variant."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

# The packaged configs (`--config <name>`); the checkout's top-level configs/ links to them.
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "deepsmote_jax" / "configs"
VARIANTS = [
  (path.stem, arg)
  for path in sorted(CONFIGS.glob("*.py"))
  if not path.name.startswith("_")
  for arg in (
    [None, "blowhole", "crack", "blowhole:local", "crack:local", "crack:crops", "blowhole:crops:local"]
    if path.stem == "magnetic_tile"
    else [None, "local"]
  )
]


def get_config(name: str, arg: str | None = None):
  # As ml_collections.config_flags loads `--config configs/<name>.py[:arg]`: from the file, not as a package.
  spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("name,arg", VARIANTS)
def test_config_loads(name, arg, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # configs built on configs/default.py find it beside themselves
  config = get_config(name, arg)
  assert config.model.preset and config.workdir
  if arg and arg.endswith("local"):
    assert config.train.epochs == 2 and config.pipeline.seeds == (0,)


def test_derived_configs_keep_the_default_jobs_settings():
  base = get_config("default")
  for name, arg in (("magnetic_tile", "crack"), ("large_images", None)):
    c = get_config(name, arg)
    assert (c.model.preset, c.train.learning_rate, c.classifier.name) == ("tiny_64", 2e-3, "small_cnn")
    assert c.data.source == "folder" and (c.imbalance.ok_count, c.imbalance.minority_ratio) == (0, 0.0)
    assert c.train.steps_per_call == base.train.steps_per_call == 8
  with pytest.raises(ValueError, match="choose the defect class"):
    get_config("magnetic_tile", "free")
  with pytest.raises(ValueError, match=r"unknown variant\(s\) \['crop'\]"):
    get_config("magnetic_tile", "blowhole:crop")
  crops = get_config("magnetic_tile", "blowhole:crops")
  assert (crops.data.patches.mode, crops.data.patches.stride, crops.classifier.epochs) == ("defect_crops", 32, 20)
  assert crops.data.patches.mask_root.endswith("magnetic_tile/masks") and crops.workdir.endswith("blowhole_crops")


def test_the_checkouts_configs_folder_is_the_packaged_one():
  top = pathlib.Path(__file__).resolve().parents[1] / "configs"
  assert top.resolve() == CONFIGS.resolve() and (top / "default.py").is_file()


def test_neu_scratches_makes_scratches_the_scarce_positive_class_among_six(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  base = get_config("default")
  for arg in (None, "local"):
    c = get_config("neu_scratches", arg)
    assert (c.model.preset, c.model.channels, c.classifier.name) == ("tiny_64", 1, "small_cnn")
    assert c.data.source == "folder" and c.data.root == "../shared/data/neu_det/images" and len(c.data.classes) == 6
    assert c.imbalance.scarce_classes == ("scratches",) and c.imbalance.minority_ratio == 0.1
    assert c.pipeline.positive_class == "scratches" and "anomaly_ae" not in c.pipeline.methods
  assert c.train.epochs == 2 and get_config("neu_scratches").train.learning_rate == base.train.learning_rate
  with pytest.raises(ValueError, match="the only variant is 'local'"):
    get_config("neu_scratches", "crack")
