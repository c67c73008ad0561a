"""deepsmote_jax: DeepSMOTE (encoder/decoder + latent SMOTE) in JAX/Flax for imbalanced defect images.

The public API for library users; TensorFlow is never imported here (only the tf.data pipeline and TFDS
loaders in `deepsmote_jax.data` import it, lazily).
"""

from deepsmote_jax.export import export_autoencoder, export_classifier, load_autoencoder, load_classifier
from deepsmote_jax.models.autoencoder import Autoencoder, build_autoencoder, count_params, summary
from deepsmote_jax.models.presets import PRESETS, AutoencoderSpec, ConvSpec, get_preset
from deepsmote_jax.sampler import DeepSMOTE
from deepsmote_jax.smote import fit_resample, nearest_neighbors, sampling_targets
from deepsmote_jax.train.autoencoder import AETrainConfig, decode_codes, encode_images, train_autoencoder

__all__ = [
  "AETrainConfig",
  "Autoencoder",
  "AutoencoderSpec",
  "ConvSpec",
  "DeepSMOTE",
  "PRESETS",
  "build_autoencoder",
  "count_params",
  "decode_codes",
  "encode_images",
  "export_autoencoder",
  "export_classifier",
  "fit_resample",
  "get_preset",
  "load_autoencoder",
  "load_classifier",
  "nearest_neighbors",
  "sampling_targets",
  "summary",
  "train_autoencoder",
]
__version__ = "0.1.0"
