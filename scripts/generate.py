"""Turn an imbalanced image folder into a balanced one with a trained DeepSMOTE encoder/decoder.

  python scripts/generate.py --config amoled_dent_200 --config.data.root=/path/to/images \
      --split runs/dent/data --model runs/dent/autoencoder --workdir runs/dent/balanced \
      [--config.generate.sampling_strategy='{"NG": 200}'] [--config.generate.kind=smote] \
      [--config.generate.k_neighbors=5] [--config.generate.seed=0] [--copy_originals copy|link|png|none] [--overwrite]
  python scripts/generate.py --config default --model runs/elpv/autoencoder --workdir runs/elpv/balanced  # ELPV

Over-samples the training split of --split DIR (the autoencoder's <workdir>/data), or of the split made with
the config and kept as <workdir>/data. Writes <workdir>/<class>/*, manifest.csv, grids/<class>.png and
summary.json, and prints the per-class counts before and after.
The same as `deepsmote generate` (`--help` lists the flags).
"""

import sys

from deepsmote_jax.cli import main

if __name__ == "__main__":
  main(["generate", *sys.argv[1:]])
