"""Train a DeepSMOTE encoder/decoder.

  python scripts/train_autoencoder.py --config configs/amoled_dent_200.py \
      --config.data.root=/path/to/images --config.train.epochs=100 --workdir runs/dent [--resume | --overwrite]

Writes checkpoints, metrics.jsonl, the exported model (<workdir>/autoencoder) and reconstructions.png. With
--config.train.val_fraction=0.2 a fifth of each class is held out: validation PSNR / SSIM per class are logged
every epoch and the exported model is the best state by --config.train.select_metric (psnr | ssim | last).
"""

from absl import app, flags
from ml_collections import config_flags

from deepsmote_jax import compilation_cache
from deepsmote_jax.jobs import boundary
from deepsmote_jax.jobs.train_autoencoder import train_and_export

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:local]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: config.workdir).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in the workdir (same settings).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Discard checkpoints of an earlier run in the workdir.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an error.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  boundary.quiet_logs()
  compilation_cache.enable()
  config = _CONFIG.value
  with boundary.user_errors(_VERBOSE.value):
    summary = train_and_export(
      config, _WORKDIR.value or config.workdir, resume=_RESUME.value, overwrite=_OVERWRITE.value
    )
  print(
    f"trained {summary['final_step']} steps in {summary['wall_s']:.1f} s; "
    f"final loss {summary.get('loss', float('nan')):.4f}; exported to {summary['export']}"
  )
  val = summary.get("validation")
  if val:
    print(
      f"exported the state of step {val['step']} (best validation {val['select_metric']}): "
      f"PSNR {val['psnr']:.2f} dB, SSIM {val['ssim']:.3f} (means over classes)"
    )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
