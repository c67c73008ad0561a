"""The main job: train DeepSMOTE, generate a balanced set, train and compare classifiers, write the report.

  python scripts/run_pipeline.py --config configs/default.py --workdir runs/default
  python scripts/run_pipeline.py --config amoled_dent_200 --config.data.root=/path/to/images --workdir runs/dents
Rerunning the same command resumes: finished stages are reused, unfinished ones redone. The same as
`deepsmote pipeline` (`--help` lists the flags and the stages).
"""

import sys

from deepsmote_jax.cli import main

if __name__ == "__main__":
  main(["pipeline", *sys.argv[1:]])
