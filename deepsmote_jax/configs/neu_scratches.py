"""NEU-DET steel (../shared/data/neu_det): `scratches` made scarce among the six defect classes.

There is no OK class: the classifier is 6-class (crazing, inclusion, patches, pitted_surface, rolled-in_scale,
scratches) and `scratches` is the positive class, so NG recall is the recall of scratches and overkill the
share of the other five classes flagged as scratches. In the training split scratches are cut to 10 % of the
other classes' mean count (18 of 180, `imbalance.scarce_classes`); the other classes, validation and test
are untouched. 64x64 grayscale, the default job's `tiny_64` encoder/decoder and `small_cnn`.
  python scripts/run_pipeline.py --config configs/neu_scratches.py --workdir runs/neu_scratches
Add `:local` for a one-minute smoke run of the same path. The one-class `anomaly_ae` baseline is left out:
it learns a single OK class (`imbalance.ok_class`), and here the "not scratches" side is five defect classes.
"""

import pathlib
import runpy

from deepsmote_jax import config_lib

CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


def get_config(arg: str | None = None):
  # configs/default.py's small CPU job (tiny_64, small_cnn, the same rates), on this data.
  c = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))["get_config"]()
  c.data.source = "folder"
  c.data.root = "../shared/data/neu_det/images"
  c.data.classes = CLASSES
  c.split.ratios = (0.6, 0.2, 0.2)  # 180 / 60 / 60 images of each class
  c.imbalance.ok_class = ""  # no OK class: not used by the cut below
  c.imbalance.ok_count = 0
  c.imbalance.scarce_classes = ("scratches",)
  c.imbalance.minority_ratio = 0.1
  c.pipeline.methods = ("none", "class_weights", "random_oversampling", "smote_pixels", "deepsmote")
  c.pipeline.seeds = (0, 1, 2)
  c.pipeline.positive_class = "scratches"
  c.workdir = "runs/neu_scratches"
  if arg == "local":
    config_lib.make_local(c)
  elif arg:
    raise ValueError(f"configs/neu_scratches.py:{arg}: the only variant is 'local'")
  return c
