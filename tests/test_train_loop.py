"""The shared training loop's console output: a progress bar redirected to a file stays small."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
  """
  import numpy as np
  from deepsmote_jax.models.autoencoder import build_autoencoder
  from deepsmote_jax.train import autoencoder as ae

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (32, 16, 16, 1), dtype=np.uint8)
  labels = (np.arange(32) % 2).astype(np.int32)
  cfg = ae.AETrainConfig(epochs=20, batch_size=4, penalty_sample_size=4, steps_per_call=1)
  ae.train_autoencoder(build_autoencoder("micro_16"), images, labels, cfg, progress=True)
  """
)


def test_progress_bar_redirected_to_a_file_is_not_redrawn_every_step(tmp_path):
  log = tmp_path / "stderr.log"
  with open(log, "w") as f:
    subprocess.run([sys.executable, "-c", SCRIPT], stderr=f, stdout=subprocess.DEVNULL, check=True, timeout=600)
  text = log.read_text()
  assert "160/160" in text  # the bar's last state is written
  # 160 steps: the old loop wrote a line per metrics update to a file (157 KB for 1,200 steps); now one a minute.
  assert text.count("DeepSMOTE micro_16:") <= 4 and len(text) < 5_000, text[-2000:]
