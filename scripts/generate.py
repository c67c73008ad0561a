"""Turn an imbalanced image folder into a balanced one with a trained DeepSMOTE encoder/decoder.

  python scripts/generate.py --model runs/dent/autoencoder --data /path/to/images --out runs/dent/balanced \
      [--sampling-strategy auto|minority|'not majority'|'not minority'|all|0.5|'{"NG": 200}'] \
      [--kind smote] [--k 5] [--seed 0] [--copy-originals copy|link|png|none] [--overwrite] [--on-error raise|skip]
  python scripts/generate.py --model runs/elpv/autoencoder --elpv --out runs/elpv/balanced

The data is loaded at the model's image size and channels. Writes <out>/<class>/*, manifest.csv,
grids/<class>.png and summary.json, and prints the per-class counts before and after.
"""

from __future__ import annotations

import argparse
import json
import warnings

from deepsmote_jax.data.elpv import load_elpv
from deepsmote_jax.data.folder import load_image_folder
from deepsmote_jax.data.image_io import ON_ERROR, RESIZE_POLICIES
from deepsmote_jax.export import load_autoencoder
from deepsmote_jax.jobs import boundary, generate
from deepsmote_jax.smote import KINDS


def parse_sampling_strategy(text: str):
  """'auto' / 'minority' / ... as is, '0.5' as a float, '{"NG": 200}' as a dict of class -> target count."""
  text = text.strip()
  if text.startswith("{"):
    try:
      value = json.loads(text)
    except json.JSONDecodeError as e:
      raise argparse.ArgumentTypeError(f"--sampling-strategy is not valid JSON: {e}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
      raise argparse.ArgumentTypeError(f"--sampling-strategy counts must be integers, got {value}")
    return value
  try:
    return float(text)
  except ValueError:
    return text


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, help="exported encoder/decoder (<workdir>/autoencoder)")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--data", help="image folder, one subfolder per class")
  source.add_argument("--elpv", action="store_true", help="use the ELPV solar-cell set (OK/NG) instead")
  parser.add_argument("--out", required=True, help="output folder (must not exist or be empty, see --overwrite)")
  parser.add_argument(
    "--sampling-strategy",
    type=parse_sampling_strategy,
    default="auto",
    help="auto, minority, 'not majority', 'not minority', all, a ratio (2 classes) or a JSON "
    "dict of target counts per class (default: auto)",
  )
  parser.add_argument("--kind", choices=KINDS, default="smote")
  parser.add_argument("--k", type=int, default=5, help="SMOTE neighbours (default: 5)")
  parser.add_argument("--strict", action="store_true", help="error (not warning) for classes with <= k images")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--copy-originals",
    choices=generate.COPY_MODES,
    default="copy",
    help="copy / link the original files, write them as PNG at the model size, or none",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
  parser.add_argument("--on-error", choices=ON_ERROR, default="raise", help="bad input images: raise or skip")
  parser.add_argument("--resize", choices=RESIZE_POLICIES, default="resize", help="resize policy when loading")
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")
  return parser


def main(argv: list[str] | None = None) -> dict:
  args = build_parser().parse_args(argv)
  boundary.quiet_logs()
  with boundary.user_errors(args.verbose):
    return run(args)


def run(args) -> dict:
  model, meta = load_autoencoder(args.model)
  spec = meta["spec"]
  size, channels = int(spec["image_size"]), int(spec["channels"])
  if args.elpv:
    image_set = load_elpv(size, channels, resize=args.resize)
    source_root = None
  else:
    image_set = load_image_folder(
      args.data, image_size=size, channels=channels, resize=args.resize, on_error=args.on_error
    )
    source_root = args.data
  trained_on = meta.get("class_names")
  if trained_on and sorted(trained_on) != sorted(image_set.class_names):
    warnings.warn(f"the model was trained on classes {trained_on}, the data has {image_set.class_names}", stacklevel=1)
  summary = generate.generate_dataset(
    model,
    image_set,
    args.out,
    sampling_strategy=args.sampling_strategy,
    k_neighbors=args.k,
    kind=args.kind,
    seed=args.seed,
    strict=args.strict,
    copy_originals=args.copy_originals,
    source_root=source_root,
    batch_size=args.batch_size,
    overwrite=args.overwrite,
    model_path=args.model,
  )
  print(generate.format_counts(summary))
  print(
    f"wrote {sum(summary['counts_written'].values())} images to {summary['out_dir']} "
    f"in {summary['seconds']['total']:.1f} s"
  )
  return summary


if __name__ == "__main__":
  main()
