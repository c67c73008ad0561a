"""Train one defect classifier on an image folder or a named dataset, optionally adding synthetic images.

  python scripts/train_classifier.py --config amoled_dent_200 --config.data.root=my_images \
      --config.classifier.name=inception_v3 --workdir runs/cls [--split runs/dent/data] \
      [--synthetic runs/balanced] [--method class_weights]

Splits train/validation/test (config.split) into <workdir>/data or uses --split DIR, trains with the shared
jit/scan/mesh/Orbax machinery, keeps the best epoch by config.classifier.select_metric
(<workdir>/classifier/best) and evaluates it on the test split (<workdir>/evaluation: metrics.json, report.md,
PNGs). The same as `deepsmote train-classifier`.
"""

import sys

from deepsmote_jax.cli import main

if __name__ == "__main__":
  main(["train-classifier", *sys.argv[1:]])
