"""deepsmote_jax.jobs.run_info: what a pipeline run was started with."""

from __future__ import annotations

import json

from deepsmote_jax import config_lib, files
from deepsmote_jax.jobs import run_info


def test_run_info_keys_and_outside_a_checkout(tmp_path):
  config = config_lib.autoencoder_config(preset="micro_16", channels=1, epochs=1, batch_size=4)
  path = run_info.write(config, tmp_path)
  info = json.loads(path.read_text())
  assert path.name == "run_info.json"
  assert set(info) == {"started", "config", "versions", "devices", "git_commit"}
  assert info["config"] == files.json_safe(config.to_dict())
  assert set(run_info.PACKAGES) <= set(info["versions"]) and info["versions"]["jax"]
  assert info["devices"]["count"] >= 1 and info["devices"]["backend"]
  assert run_info.git_commit(tmp_path) is None  # not a git checkout
