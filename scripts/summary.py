"""Print an encoder/decoder preset's layers, output shapes and parameter counts (the paper's tables).

python scripts/summary.py amoled_dent_200 [--channels 1]
"""

import argparse

from deepsmote_jax.models import presets
from deepsmote_jax.models.autoencoder import build_autoencoder, summary


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("preset", choices=sorted(presets.PRESETS))
  parser.add_argument("--channels", type=int, default=None, help="image channels (default: the preset's)")
  args = parser.parse_args()
  overrides = {"channels": args.channels} if args.channels else {}
  print(summary(build_autoencoder(args.preset, **overrides)))


if __name__ == "__main__":
  main()
