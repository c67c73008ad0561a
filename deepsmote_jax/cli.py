"""Command-line entry points (installed as console scripts by pyproject.toml)."""
from __future__ import annotations

import sys


def enable_compilation_cache(path: str | None = None) -> None:
  """JAX's persistent compilation cache: reruns, seeds and same-shaped runs skip XLA compilation.

  `DEEPSMOTE_JAX_CACHE` overrides the folder (default ~/.cache/deepsmote_jax/xla); an empty value disables it.
  """
  import os

  import jax
  path = os.environ.get("DEEPSMOTE_JAX_CACHE", path or os.path.expanduser("~/.cache/deepsmote_jax/xla"))
  if path and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run_pipeline_main(argv=None) -> None:
  """`deepsmote-pipeline --config configs/default.py [--workdir DIR] [--stage NAME]`."""
  from absl import app, flags, logging
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:local]).")
  workdir_flag = flags.DEFINE_string("workdir", None, "Output directory (default: config.workdir).")
  stage_flag = flags.DEFINE_string("stage", None, "Run only this stage (its inputs must exist).")
  progress_flag = flags.DEFINE_bool("progress", True, "Show progress bars.")

  def main(args):
    if len(args) > 1:
      raise app.UsageError(f"unexpected arguments: {args[1:]}")
    logging.set_verbosity(logging.WARNING)
    enable_compilation_cache()
    from deepsmote_jax.jobs.pipeline import run_pipeline, summary_text
    config = config_flag.value
    workdir = workdir_flag.value or config.workdir
    summary = run_pipeline(config, workdir, progress=progress_flag.value, only=stage_flag.value)
    print(summary_text(summary, workdir))

  flags.mark_flags_as_required(["config"])
  app.run(main, argv=argv or sys.argv)
