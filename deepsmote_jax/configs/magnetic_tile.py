"""magnetic_tile (../shared/data/magnetic_tile): one defect class against `free`, split by physical tile.

The real-data check of the defect detector: `blowhole` (small round pits, the AMOLED dents' analogue) or
`crack` (thin lines, the scratches' analogue) against `free` (OK), each at its natural scarcity in the training
split (about 12 % / 6 % of OK), grouped by the tile id in `expN_num_ID` (one tile's exposures never straddle
splits). About 15 minutes on 2 CPU cores with 3 seeds.
  python scripts/run_pipeline.py --config configs/magnetic_tile.py:blowhole --workdir runs/magnetic_tile_blowhole
  python scripts/run_pipeline.py --config configs/magnetic_tile.py:crack --workdir runs/magnetic_tile_crack
`:crops` (e.g. `blowhole:crops`) sees each defect at its own scale, as `reports/magnetic_tile_blowhole_crops_*`
did: training on 64 px crops centred on each masked defect (and 8 random tiles of each free image), every
image scored by its worst 64 px tile at native resolution, tiles every 32 px so that a defect on one tile's
border is whole in another (the same exported models on validation: ROC AUC 0.96 -> 0.99 on blowholes, 0.89 ->
0.98 on cracks), the classifier trained 20 epochs (its validation AP still rose at 6). Hours on 2 CPU cores
with every method and 3 seeds.
Add `:local` (e.g. `blowhole:local`, `blowhole:crops:local`) for a smoke run of the same path: a minute for whole
images; with `:crops` still every tile is cut and scored (about 10 minutes on 2 CPU cores for three methods).
"""

import pathlib
import runpy

from deepsmote_jax import config_lib

DEFECTS = ("blowhole", "crack")
VARIANTS = ("crops", "local")


def get_config(arg: str | None = None):
  defect, *variants = (arg or "blowhole").split(":")
  if defect not in DEFECTS:
    raise ValueError(f"configs/magnetic_tile.py:{arg}: choose the defect class among {DEFECTS}")
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    raise ValueError(f"configs/magnetic_tile.py:{arg}: unknown variant(s) {sorted(unknown)}; known: {VARIANTS}")
  # configs/default.py's small CPU job (tiny_64, small_cnn, the same rates and methods), on this data.
  c = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))["get_config"]()
  c.train.epochs = 30
  c.data.source = "folder"
  c.data.root = "../shared/data/magnetic_tile/images"
  c.data.classes = ("free", defect)
  c.split.group_pattern = "magnetic_tile"
  c.imbalance.ok_class = "free"
  c.imbalance.ok_count = 0  # all OK images, the defect at its natural scarcity
  c.imbalance.minority_ratio = 0.0
  c.classifier.epochs = 10
  c.pipeline.seeds = (0, 1, 2)
  c.pipeline.positive_class = defect
  c.workdir = f"runs/magnetic_tile_{defect}"
  if "crops" in variants:
    c.data.patches.mode = "defect_crops"
    c.data.patches.mask_root = "../shared/data/magnetic_tile/masks"
    c.data.patches.stride = 32
    c.data.patches.ok_tiles_per_image = 8
    c.data.patches.min_std = 2.0  # flat background tiles carry nothing
    c.train.epochs = 10
    c.classifier.epochs = 20
    c.workdir += "_crops"
  if "local" in variants:
    config_lib.make_local(c)
  return c
