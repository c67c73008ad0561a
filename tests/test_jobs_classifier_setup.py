"""What every classifier run reads from the config: the parsed sampling strategy and the training settings."""

from __future__ import annotations

import pytest

from deepsmote_jax import config_lib
from deepsmote_jax.jobs import classifier_setup


def test_sampling_strategy_parses_names_floats_and_json_counts():
  parse = classifier_setup.sampling_strategy
  assert parse("auto") == "auto" and parse(" not majority ") == "not majority"
  assert parse("0.5") == 0.5 and parse('{"NG": 200}') == {"NG": 200}
  assert parse({"NG": 3}) == {"NG": 3}


def test_build_names_a_bad_classifier_setting_before_building():
  config = config_lib.autoencoder_config(preset="micro_16", channels=1, epochs=1, batch_size=4)
  config.classifier.optimizer = "adamw"
  with pytest.raises(ValueError, match=r"^config.classifier.optimizer='adamw': choose one of"):
    classifier_setup.build(
      config, num_classes=2, image_shape=(16, 16, 1), seed=0, class_weighting="none", oversampling="none"
    )


def test_a_bad_sampling_strategy_names_the_setting():
  with pytest.raises(ValueError, match=r"^config.generate.sampling_strategy='\{NG: 3\}' is not valid JSON"):
    classifier_setup.sampling_strategy("{NG: 3}")
  with pytest.raises(ValueError, match="target counts must be integers"):
    classifier_setup.sampling_strategy('{"NG": 2.5}')
