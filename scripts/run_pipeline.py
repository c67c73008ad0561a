"""The main job: train DeepSMOTE, generate a balanced set, train and compare classifiers, write the report.

  python scripts/run_pipeline.py --config configs/default.py --workdir runs/default
  python scripts/run_pipeline.py --config configs/amoled_dent_200.py --config.data.root=/path/to/images ...
Rerunning the same command resumes: finished stages are reused, unfinished ones redone.
"""

from deepsmote_jax.cli import run_pipeline_main

if __name__ == "__main__":
  run_pipeline_main()
