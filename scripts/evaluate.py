"""Evaluate an exported classifier on a labelled image folder (one subfolder per class).

  python scripts/evaluate.py --model runs/cls/classifier/best --images test_images --workdir runs/eval \
      [--val_images val_images] [--config amoled_dent_200 --config.pipeline.positive_class=NG \
      --config.pipeline.target_recall=0.98]

Writes metrics.json, report.md (the paper's Table 1 layout, NG recall, leak rate, overkill, ACSA/G-mean/F1)
and confusion-matrix / PR / ROC PNGs. With --val_images the recall-first threshold is chosen on them.
The same as `deepsmote evaluate` (`--help` lists the flags).
"""

import sys

from deepsmote_jax.cli import main

if __name__ == "__main__":
  main(["evaluate", *sys.argv[1:]])
