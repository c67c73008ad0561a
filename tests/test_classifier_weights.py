"""config.classifier.weights: a Keras weight file loaded into the classifier before training, checked first.

A small EfficientNet-B0 (the smallest Keras application the loader supports, at its 32x32 minimum) is written
by Keras itself; small_cnn has no Keras counterpart, so for it only the error is tested.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from deepsmote_jax import config_lib
from deepsmote_jax.jobs import classifier_setup, pipeline

# One xdist worker runs this module (`--dist loadgroup`), so its module-scoped fixture is built once.
pytestmark = pytest.mark.xdist_group("classifier_weights")

keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

SIZE = 32


def _config(tmp_path: pathlib.Path, name: str = "efficientnet_b0", weights: str = ""):
  c = config_lib.autoencoder_config(preset="micro_16", channels=3, epochs=1, batch_size=4)
  c.classifier.name = name
  c.classifier.weights = weights
  root = tmp_path / "images"
  for cls in ("OK", "NG"):
    (root / cls).mkdir(parents=True, exist_ok=True)
  c.data.root = str(root)
  return c


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
  """({'b0_2': a 2-class EfficientNetB0 .keras file, 'b0_3': the same with 3 classes (.h5), 'dense': a
  one-layer model (.h5)}, {'b0_2': the 2-class Keras model, 'b0_3': the 3-class one})."""
  d = tmp_path_factory.mktemp("keras")
  keras.utils.set_random_seed(0)
  b0 = keras.applications.EfficientNetB0(
    weights=None, input_shape=(SIZE, SIZE, 3), classes=2, classifier_activation=None
  )
  b0.save(d / "b0_2.keras")
  b0_3 = keras.applications.EfficientNetB0(
    weights=None, input_shape=(SIZE, SIZE, 3), classes=3, classifier_activation=None
  )
  b0_3.save(d / "b0_3.h5")
  dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
  dense.save(d / "dense.h5")
  return {"b0_2": d / "b0_2.keras", "b0_3": d / "b0_3.h5", "dense": d / "dense.h5"}, {"b0_2": b0, "b0_3": b0_3}


def _values(model) -> dict[str, list[np.ndarray]]:
  """The model's Keras-named tensors as Keras stores them (depthwise kernels transposed back)."""
  out = {}
  for layer in model.keras_layers():
    if layer.targets and not layer.auto:
      out[layer.name] = [
        np.transpose(np.asarray(t.variable.get_value()), (0, 1, 3, 2))
        if t.depthwise
        else np.asarray(t.variable.get_value())
        for t in layer.targets
      ]
  return out


def _build(config):
  return classifier_setup.build(
    config, num_classes=2, image_shape=(SIZE, SIZE, 3), seed=0, class_weighting="none", oversampling="none"
  )[1]


def test_weights_file_is_loaded_before_training(keras_files, tmp_path):
  paths, models = keras_files
  b0 = models["b0_2"]
  model = _build(_config(tmp_path, weights=str(paths["b0_2"])))
  keras_values = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in b0.layers}
  mine = _values(model)
  for name in ("stem_conv", "stem_bn", "top_conv", "predictions"):
    for got, want in zip(mine[name], keras_values[name]):
      np.testing.assert_array_equal(got, want)
  # Without weights: the random initialisation (today's behaviour).
  fresh = _values(_build(_config(tmp_path)))
  assert not np.array_equal(fresh["stem_conv"][0], keras_values["stem_conv"][0])


def test_weights_with_another_head_load_the_backbone(keras_files, tmp_path):
  paths, models = keras_files
  model = _build(_config(tmp_path, weights=str(paths["b0_3"])))
  fresh = _values(_build(_config(tmp_path)))
  mine = _values(model)
  for name in ("stem_conv", "top_bn"):
    for got, want in zip(mine[name], models["b0_3"].get_layer(name).get_weights()):
      np.testing.assert_array_equal(got, want)  # the backbone: from the file
  np.testing.assert_array_equal(mine["predictions"][0], fresh["predictions"][0])  # the 2-class head: initialised


def test_bad_weights_are_one_line_errors_naming_the_setting(keras_files, tmp_path):
  paths, _ = keras_files
  with pytest.raises(ValueError, match=r"^config\.classifier\.weights='.*missing\.keras' is not a file$"):
    classifier_setup.check_weights(_config(tmp_path, weights=str(tmp_path / "missing.keras")))
  with pytest.raises(ValueError, match=r"config\.classifier\.weights=.*\.keras or \.h5"):
    classifier_setup.check_weights(_config(tmp_path, weights=str(tmp_path / "w.npz")))
  with pytest.raises(ValueError, match=r"config\.classifier\.weights=.*small_cnn.*no keras\.applications"):
    classifier_setup.check_weights(_config(tmp_path, name="small_cnn", weights=str(paths["b0_2"])))
  # The pipeline checks it before the first stage.
  with pytest.raises(ValueError, match=r"config\.classifier\.weights"):
    pipeline.validate_config(_config(tmp_path, name="small_cnn", weights=str(paths["b0_2"])))
  # Another architecture: nothing is loaded, one line names the setting and a tensor.
  with pytest.raises(ValueError, match=r"config\.classifier\.weights=.*dense\.h5' does not fit .*efficientnet_b0") as e:
    _build(_config(tmp_path, weights=str(paths["dense"])))
  assert "\n" not in str(e.value)


def test_weights_are_part_of_the_classifier_stage_record(keras_files, tmp_path):
  paths, _ = keras_files
  none = _config(tmp_path)
  with_file = _config(tmp_path, weights=str(paths["b0_2"]))
  recs = [pipeline.records(c, pipeline.stages(c, tmp_path)) for c in (none, with_file)]
  assert "weights" not in recs[0]["classifiers"]["settings"]["classifier"]  # older records stay valid
  assert recs[1]["classifiers"]["settings"]["classifier"]["weights"] == str(paths["b0_2"])
  assert recs[1]["classifiers"]["inputs"]["classifier.weights"]["bytes"] > 0
  assert recs[0]["classifiers"] != recs[1]["classifiers"] and recs[0]["data"] == recs[1]["data"]
