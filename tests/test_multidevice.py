"""Data parallelism: 4 simulated CPU devices give the same training result as 1 device (float rounding)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from flax import nnx
    from deepsmote_jax.models.autoencoder import build_autoencoder
    from deepsmote_jax.models.presets import AutoencoderSpec, ConvSpec
    from deepsmote_jax.train import autoencoder as ae
    from deepsmote_jax.train.mesh import make_mesh
    assert len(jax.devices()) == 4, jax.devices()
    spec = AutoencoderSpec(name="micro_16", image_size=16, channels=1, latent_dim=8,
        encoder=(ConvSpec(4, 4, 2, 1), ConvSpec(8, 4, 2, 1)), decoder_input=(4, 4, 8),
        decoder=(ConvSpec(4, 4, 2, 1), ConvSpec(1, 4, 2, 1)))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (22, 16, 16, 1)).astype(np.uint8)
    labels = (np.arange(22) % 3).astype(np.int32)
    cfg = ae.AETrainConfig(epochs=2, batch_size=8, steps_per_call=3, penalty_sample_size=6,
                           compute_dtype="float32", penalty="{penalty}")
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      model = build_autoencoder(spec, seed=0)
      r = ae.train_autoencoder(model, images, labels, cfg, mesh=make_mesh(devices), progress=False)
      results.append(jax.device_get((r.state.params, r.state.batch_stats)))
    one, four = results
    # A transposed-conv bias directly followed by BatchNorm has an exactly-zero gradient; Adam turns its
    # float-rounding noise into +-lr steps, so it (and the running mean it shifts) is compared against the
    # largest possible Adam drift instead of rounding.
    free = lambda path: ("deconvs" in path and "bias" in path) or ("decoder" in path and "mean" in path)
    worst, worst_free = 0.0, 0.0
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(one), jax.tree.leaves(four)):
      d = float(np.max(np.abs(a - b)))
      if free(jax.tree_util.keystr(path)):
        worst_free = max(worst_free, d)
      else:
        worst = max(worst, d)
    print("MAXDIFF", worst, "FREE", worst_free)
    assert worst < 1e-6, worst
    assert worst_free <= 2 * cfg.learning_rate * 6 + 1e-6, worst_free
    print("OK")
""")


def _run(penalty: str):
  env = dict(os.environ)
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
    [sys.executable, "-c", SCRIPT.replace("{penalty}", penalty)], env=env, capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc.stdout


def test_four_devices_equal_one_device():
  out = _run("reference")
  assert "MAXDIFF" in out
