"""Print config.model's encoder/decoder layers, output shapes and parameter counts (the paper's tables).

  python scripts/summary.py --config amoled_dent_200 [--config.model.channels=1]

The same as `deepsmote summary`.
"""

import sys

from deepsmote_jax.cli import main

if __name__ == "__main__":
  main(["summary", *sys.argv[1:]])
