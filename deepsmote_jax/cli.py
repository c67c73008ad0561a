"""The installed `deepsmote-pipeline` command (absl flags + an ml_collections config file)."""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from deepsmote_jax import compilation_cache
from deepsmote_jax.jobs import boundary
from deepsmote_jax.jobs.pipeline import run_pipeline, summary_text

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:local]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: config.workdir).")
_STAGE = flags.DEFINE_string("stage", None, "Run only this stage (its inputs must exist).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an error.")


def _main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  boundary.quiet_logs()
  compilation_cache.enable()
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/default.py")
  workdir = _WORKDIR.value or config.workdir
  with boundary.user_errors(_VERBOSE.value):
    summary = run_pipeline(config, workdir, progress=_PROGRESS.value, only=_STAGE.value)
  print(summary_text(summary, workdir))


def run_pipeline_main(argv=None) -> None:
  """`deepsmote-pipeline --config configs/default.py [--workdir DIR] [--stage NAME]`."""
  app.run(_main, argv=argv or sys.argv)
