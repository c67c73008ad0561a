"""Train one defect classifier on an image folder or a named dataset, optionally adding synthetic images.

  python scripts/train_classifier.py --config configs/amoled_dent_200.py --config.data.root=my_images \
      --config.classifier.name=inception_v3 --workdir runs/cls [--synthetic runs/balanced] [--method class_weights]

Splits train/validation/test (config.split), trains with the shared jit/scan/mesh/Orbax machinery, keeps the
best epoch by config.classifier.select_metric (<workdir>/classifier/best) and evaluates it on the test split
(<workdir>/evaluation: metrics.json, report.md, PNGs).
"""

from absl import app, flags
from ml_collections import config_flags

from deepsmote_jax import compilation_cache
from deepsmote_jax.jobs import boundary
from deepsmote_jax.jobs.train_classifier import train_classifier_job

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:local]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_SYNTHETIC = flags.DEFINE_string("synthetic", None, "A dataset folder written by scripts/generate.py to add.")
_METHOD = flags.DEFINE_enum(
  "method",
  "none",
  ["none", "class_weights", "random_oversampling", "smote_pixels"],
  "Imbalance baseline applied to the training split.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an error.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  boundary.quiet_logs()
  compilation_cache.enable()
  config = _CONFIG.value
  with boundary.user_errors(_VERBOSE.value):
    info = train_classifier_job(
      config,
      _WORKDIR.value or config.workdir + "_classifier",
      method=_METHOD.value,
      seed=_SEED.value,
      synthetic_dir=_SYNTHETIC.value,
    )
  print(
    f"best model: {info['model']} (step {info['best_step']}); test: acc {info['test'].get('accuracy')}, "
    f"ACSA {info['test'].get('acsa')}; report: {info['evaluation']}/report.md"
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
