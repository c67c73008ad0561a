"""Evaluate an exported classifier on a labelled image folder (one subfolder per class).

  python scripts/evaluate.py --model runs/cls/classifier/best --data test_images --out runs/eval \
      [--val-data val_images] [--positive NG] [--target-recall 0.98]

Writes metrics.json, report.md (the paper's Table 1 layout, NG recall, leak rate, overkill, ACSA/G-mean/F1)
and confusion-matrix / PR / ROC PNGs. With --val-data the recall-first threshold is chosen on it.
"""

import argparse
import sys

from deepsmote_jax.jobs import boundary
from deepsmote_jax.jobs.evaluate import evaluate_folder


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True, help="exported classifier directory (…/best)")
  p.add_argument("--data", required=True, help="test image folder, one subfolder per class")
  p.add_argument("--val-data", default=None, help="validation folder for the recall-first threshold")
  p.add_argument("--out", required=True)
  p.add_argument("--positive", default="NG", help="the defect class counted as positive ('' for none)")
  p.add_argument("--target-recall", type=float, default=0.98)
  p.add_argument("--resize", default="resize", choices=["resize", "center_crop", "pad"])
  p.add_argument("--on-error", default="raise", choices=["raise", "skip"])
  p.add_argument("--verbose", action="store_true", help="show the traceback of an error")
  args = p.parse_args(argv)
  boundary.quiet_logs()
  with boundary.user_errors(args.verbose):
    result = evaluate_folder(
      args.model,
      args.data,
      args.out,
      val_folder=args.val_data,
      positive_class=args.positive or None,
      target_recall=args.target_recall,
      resize=args.resize,
      on_error=args.on_error,
    )
  print(f"accuracy {result.get('accuracy')}, ACSA {result.get('acsa')}; report: {args.out}/report.md")


if __name__ == "__main__":
  sys.exit(main())
