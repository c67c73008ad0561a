"""Train a DeepSMOTE encoder/decoder.

  python scripts/train_autoencoder.py --config amoled_dent_200 \
      --config.data.root=/path/to/images --config.train.epochs=100 --workdir runs/dent [--resume | --overwrite]

Splits the data (config.split, config.imbalance) into <workdir>/data, or uses --split DIR, and trains on the
training split only. Writes checkpoints, metrics.jsonl, the exported model (<workdir>/autoencoder),
reconstructions.png and training_data.json. Validation PSNR / SSIM per class (the validation split) are logged
every epoch and the exported model is the best state by --config.train.select_metric (psnr | ssim | last).
The same as `deepsmote train-autoencoder` (`--help` lists the flags).
"""

import sys

from deepsmote_jax.cli import main

if __name__ == "__main__":
  main(["train-autoencoder", *sys.argv[1:]])
