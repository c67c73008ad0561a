"""Large grayscale parts with thin defects: about 200 images of about 500x1250 px, on a 2-core CPU in <= 20 minutes.

A hairline crack resized with the whole part to 64x64 is gone before any model sees it; here every image is cut
into 64x64 tiles of native pixels (a 500x1250 part: 8 x 20 tiles), the tile classifier is trained from image
labels by multiple-instance learning (an NG part's score: its highest tile NG probability), and every decision,
threshold and metric of the report is per image (`classifiers/<run>/predictions.csv` lists each part's score).
  python scripts/run_pipeline.py --config configs/large_images.py --config.data.root=/path/to/parts \
      --config.pipeline.positive_class=NG --config.imbalance.ok_class=OK --workdir runs/parts
With defect masks (`<masks>/<class>/<stem>.png`): --config.data.patches.mask_root=/path/to/masks, or
--config.data.patches.mode=defect_crops to train on crops centred on each defect. Add `:local` for a smoke run.

Budget (2 CPU cores, see tests/test_jobs_tiled.py and the measurement in the module's commit): the data stage
cuts every part; the autoencoder trains 3 epochs on the training tiles (all tiles of NG parts, 8 per OK
part); each classifier run trains 6 epochs and scores the 40 validation parts' 6,400 tiles after each. One
seed: a second seed adds about a third of the time. Methods: `none` (pure MIL), `smote_pixels` and
`deepsmote` (synthetic NG tiles from the key tiles of NG parts, see deepsmote_jax/jobs/tiled.py).
`random_oversampling` and `class_weights` work too; random oversampling draws every NG part about as often
as all OK tiles together, each draw scoring all its tiles: minutes per epoch at this size.
Overlapping tiles (`--config.data.patches.stride=32`, half a tile) keep a defect that straddles a tile border
whole in some tile: on magnetic_tile's defect crops the same exported models scored validation images with
ROC AUC 0.96 -> 0.99 (blowholes) and 0.89 -> 0.98 (cracks) at stride 32 instead of 64, at about 3x the tiles
to score (here 4x: outside this config's 20-minute budget).
"""

import pathlib
import runpy

from deepsmote_jax import config_lib


def get_config(arg: str | None = None):
  # configs/default.py's small CPU job (tiny_64, small_cnn, the same rates), on tiles of large images.
  c = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))["get_config"]()
  c.train.epochs = 3
  c.train.batch_size = 64
  c.data.source = "folder"
  c.data.patches.mode = "tiles"
  c.data.patches.size = 0  # the model's 64 px: native pixels, no resize
  c.data.patches.stride = 0  # no overlap
  c.data.patches.top_k = 1
  c.data.patches.ok_tiles_per_image = 8
  c.imbalance.ok_count = 0  # all OK parts, NG as the data has it
  c.imbalance.minority_ratio = 0.0
  c.classifier.epochs = 6
  c.classifier.batch_size = 64
  c.classifier.max_shift = 4
  c.pipeline.methods = ("none", "smote_pixels", "deepsmote")
  c.pipeline.seeds = (0,)
  c.workdir = "runs/large_images"
  if arg == "local":
    config_lib.make_local(c)
  return c
