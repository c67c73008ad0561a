"""Input data: image folders, splits, DeepSMOTE protocols, ELPV/TFDS datasets and the tf.data pipeline.

Only the NumPy/Pillow parts are imported here; TensorFlow is imported lazily by `pipeline` and
`tfds_datasets`, so `import deepsmote_jax.data` works without it.
"""

from __future__ import annotations

from deepsmote_jax.data.folder import ImageSet, load_image_folder, save_image_folder

__all__ = ["ImageSet", "load_image_folder", "save_image_folder"]
