"""magnetic_tile (../shared/data/magnetic_tile): one defect class against `free`, split by physical tile.

The real-data check of the defect detector: `blowhole` (small round pits, the AMOLED dents' analogue) or
`crack` (thin lines, the scratches' analogue) against `free` (OK), each at its natural scarcity in the training
split (about 12 % / 6 % of OK), grouped by the tile id in `expN_num_ID` (one tile's exposures never straddle
splits). About 15 minutes on 2 CPU cores with 3 seeds.
  python scripts/run_pipeline.py --config configs/magnetic_tile.py:blowhole --workdir runs/magnetic_tile_blowhole
  python scripts/run_pipeline.py --config configs/magnetic_tile.py:crack --workdir runs/magnetic_tile_crack
Add `:local` (e.g. `blowhole:local`) for a one-minute smoke run of the same path.
"""

import pathlib
import runpy

from deepsmote_jax import config_lib

DEFECTS = ("blowhole", "crack")


def get_config(arg: str | None = None):
  defect, _, variant = (arg or "blowhole").partition(":")
  if defect not in DEFECTS:
    raise ValueError(f"configs/magnetic_tile.py:{arg}: choose the defect class among {DEFECTS}")
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
  if variant == "local":
    config_lib.make_local(c)
  return c
