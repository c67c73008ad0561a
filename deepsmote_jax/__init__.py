"""deepsmote_jax: DeepSMOTE (encoder/decoder + latent SMOTE) in JAX/Flax for imbalanced defect images.

The public API for library users; TensorFlow is never imported here (only the tf.data pipeline and TFDS
loaders in `deepsmote_jax.data` import it, lazily).

* Over-sampling: `DeepSMOTE` (the whole method as an imbalanced-learn sampler on uint8 images) and
  `fit_resample` (latent SMOTE: `(X_res, y_res)`, originals first; `return_provenance=True` gives the
  `Resampled` record with each synthetic row's base, neighbour and gap).
* Encoder/decoder: `build_autoencoder`, `AETrainConfig`, `train_autoencoder`, `encode_images`, `decode_codes`.
* Classifiers: `build_classifier`, `ClassifierTrainConfig`, `train_classifier`, `predict_proba` (class
  probabilities of uint8 images), `load_keras_weights` (Keras application weights into the Flax twins).
* Evaluation: `evaluate` (test labels and probabilities -> metrics, recall-first threshold, report files).
* Export: `export_autoencoder` / `load_autoencoder`, `export_classifier` / `load_classifier`.
* Data larger than memory: `FileImages` (image files read when used: pass one as the images of
  `train_autoencoder` / `train_classifier` / `encode_images` / `predict_proba` to stream them).
"""

from deepsmote_jax.data.file_images import FileImages
from deepsmote_jax.evaluation import evaluate
from deepsmote_jax.export import export_autoencoder, export_classifier, load_autoencoder, load_classifier
from deepsmote_jax.models.autoencoder import Autoencoder, build_autoencoder, count_params, summary
from deepsmote_jax.models.classifiers import build_classifier, load_keras_weights
from deepsmote_jax.models.presets import PRESETS, AutoencoderSpec, ConvSpec, get_preset
from deepsmote_jax.sampler import DeepSMOTE
from deepsmote_jax.smote import Resampled, fit_resample, nearest_neighbors, sampling_targets
from deepsmote_jax.train.autoencoder import AETrainConfig, decode_codes, encode_images, train_autoencoder
from deepsmote_jax.train.classifier import ClassifierTrainConfig, predict_proba, train_classifier

__all__ = [
  "AETrainConfig",
  "Autoencoder",
  "AutoencoderSpec",
  "ClassifierTrainConfig",
  "ConvSpec",
  "DeepSMOTE",
  "FileImages",
  "PRESETS",
  "Resampled",
  "build_autoencoder",
  "build_classifier",
  "count_params",
  "decode_codes",
  "encode_images",
  "evaluate",
  "export_autoencoder",
  "export_classifier",
  "fit_resample",
  "get_preset",
  "load_autoencoder",
  "load_classifier",
  "load_keras_weights",
  "nearest_neighbors",
  "predict_proba",
  "sampling_targets",
  "summary",
  "train_autoencoder",
  "train_classifier",
]
__version__ = "0.1.0"
