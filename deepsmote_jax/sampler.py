"""`DeepSMOTE`: the whole method as an imbalanced-learn style sampler on uint8 image arrays.

`DeepSMOTE(...).fit_resample(X, y)` trains the encoder/decoder on X (all classes, reconstruction + penalty),
encodes every image, over-samples the codes with SMOTE and decodes the new codes; it returns
`(X_res, y_res)`: the originals first, then the synthetic images, as imbalanced-learn's samplers do. Being a
scikit-learn estimator (parameters in `__init__`, `get_params`/`set_params`, `clone`), it can stand as a step
of an `imblearn.pipeline.Pipeline` before a classifier.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from sklearn.base import BaseEstimator

from deepsmote_jax import smote
from deepsmote_jax.models.autoencoder import Autoencoder, build_autoencoder
from deepsmote_jax.models.presets import AutoencoderSpec, get_preset
from deepsmote_jax.train.autoencoder import SYNTHESES, AETrainConfig, encode_images, synthesize, train_autoencoder

# The sampler's parameters that are `AETrainConfig` fields of the same name.
_TRAIN_SETTINGS = (
  "epochs",
  "batch_size",
  "learning_rate",
  "penalty",
  "penalty_weight",
  "penalty_sample_size",
  "penalty_classes",
  "edge_weight",
  "compute_dtype",
)


class DeepSMOTE(BaseEstimator):
  """DeepSMOTE over-sampler for uint8 NHWC image arrays (Dablain, Krawczyk and Chawla 2021).

  Args:
    preset: autoencoder preset name (`deepsmote_jax.PRESETS`) or an `AutoencoderSpec`; its `image_size` and
      `channels` must match X.
    epochs, batch_size, learning_rate, penalty, penalty_weight, penalty_sample_size, penalty_classes,
      edge_weight, compute_dtype: the encoder/decoder training settings (see `AETrainConfig`; defaults are the released
      code's, except `epochs`).
    sampling_strategy: imbalanced-learn's over-sampling strategy ('auto', 'minority', a float for two
      classes, a {class: target count} dict or a callable of y).
    k_neighbors: SMOTE's k in the latent space. kind: 'smote', 'borderline-1', 'borderline-2' or 'adasyn'.
    synthesis: 'decode' (the paper: decoded synthetic codes) or 'residual' (each synthetic code's base image
      plus the decoded change from the base's code: detail the decoder loses is kept; see `synthesize`).
    random_state: an int seed (None: 0); the same seed gives the same images.
    progress: show a progress bar while training.

  Fitted attributes: `autoencoder_` (the trained model), `classes_`, `training_summary_` (losses, steps),
  and after `fit_resample`, `resampled_` (the latent `smote.Resampled`: base/neighbour/gap provenance of
  every synthetic row, indices into X).
  """

  def __init__(
    self,
    preset: str | AutoencoderSpec = "tiny_64",
    *,
    epochs: int = 50,
    batch_size: int = 100,
    learning_rate: float = 2e-4,
    penalty: str = "reference",
    penalty_weight: float = 1.0,
    penalty_sample_size: int = 100,
    penalty_classes: str = "uniform",
    edge_weight: float = 0.0,
    compute_dtype: str = "auto",
    sampling_strategy: Any = "auto",
    k_neighbors: int = 5,
    kind: str = "smote",
    synthesis: str = "decode",
    random_state: int | None = None,
    progress: bool = False,
  ):
    self.preset = preset
    self.epochs = epochs
    self.batch_size = batch_size
    self.learning_rate = learning_rate
    self.penalty = penalty
    self.penalty_weight = penalty_weight
    self.penalty_sample_size = penalty_sample_size
    self.penalty_classes = penalty_classes
    self.edge_weight = edge_weight
    self.compute_dtype = compute_dtype
    self.sampling_strategy = sampling_strategy
    self.k_neighbors = k_neighbors
    self.kind = kind
    self.synthesis = synthesis
    self.random_state = random_state
    self.progress = progress

  def _seed(self) -> int:
    if self.random_state is None:
      return 0
    if not isinstance(self.random_state, (int, np.integer)) or isinstance(self.random_state, bool):
      raise ValueError(f"random_state must be an int or None, got {self.random_state!r}")
    return int(self.random_state)

  def _spec(self) -> AutoencoderSpec:
    return self.preset if isinstance(self.preset, AutoencoderSpec) else get_preset(self.preset)

  def _check(self, X, y) -> tuple[np.ndarray, np.ndarray]:
    """X as uint8 NHWC (a 3-D array is taken as grayscale) and y, checked against each other and the preset."""
    if self.synthesis not in SYNTHESES:  # before any training
      raise ValueError(f"synthesis={self.synthesis!r}: choose one of {SYNTHESES}")
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 3:  # (N, H, W) grayscale
      X = X[..., None]
    if X.ndim != 4 or X.dtype != np.uint8:
      raise ValueError(f"X must be uint8 images (N, H, W, C), got {X.dtype} of shape {X.shape}")
    if y.shape != (X.shape[0],):
      raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
    spec = self._spec()
    if X.shape[1:] != (spec.image_size, spec.image_size, spec.channels):
      raise ValueError(
        f"X holds {X.shape[1:]} images but preset {spec.name!r} takes "
        f"{(spec.image_size, spec.image_size, spec.channels)}; resize X or choose another preset"
      )
    return X, y

  def fit(self, X, y) -> DeepSMOTE:
    """Trains the encoder/decoder on X with labels y (all classes); returns self."""
    X, y = self._check(X, y)
    classes, y_index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
      raise ValueError(f"over-sampling needs at least 2 classes in y, got {classes.tolist()}")
    cfg = AETrainConfig(**{name: getattr(self, name) for name in _TRAIN_SETTINGS}, seed=self._seed())
    model = build_autoencoder(self._spec(), seed=self._seed())
    labels = y_index.astype(np.int32)
    result = train_autoencoder(model, X, labels, cfg, num_classes=len(classes), progress=self.progress)
    self.classes_ = classes
    self.autoencoder_: Autoencoder = result.best_model
    self.training_summary_: dict = result.summary
    return self

  def resample(self, X, y) -> tuple[np.ndarray, np.ndarray]:
    """With the fitted encoder/decoder: `(X_res, y_res)`, X and y followed by the decoded synthetic images."""
    if not hasattr(self, "autoencoder_"):
      raise ValueError("this DeepSMOTE is not fitted yet: call fit or fit_resample first")
    X, y = self._check(X, y)
    unknown = np.setdiff1d(np.unique(y), self.classes_)
    if unknown.size:
      raise ValueError(f"y has class(es) {unknown.tolist()} that fit never saw (classes: {self.classes_.tolist()})")
    codes = encode_images(self.autoencoder_, X)
    self.resampled_ = smote.fit_resample(
      jax.random.key(self._seed()),
      codes,
      y,
      sampling_strategy=self.sampling_strategy,
      k_neighbors=self.k_neighbors,
      kind=self.kind,
      return_provenance=True,
    )
    res = self.resampled_
    residual = self.synthesis == "residual"
    synthetic = synthesize(
      self.autoencoder_,
      np.asarray(res.samples),
      synthesis=self.synthesis,
      base_codes=np.asarray(codes)[res.base] if residual else None,
      base_images=X[res.base] if residual else None,
      channels=X.shape[-1],
    )
    return np.concatenate([X, synthetic]), np.concatenate([y, self.resampled_.labels.astype(y.dtype)])

  def fit_resample(self, X, y) -> tuple[np.ndarray, np.ndarray]:
    """Trains on (X, y) and returns `(X_res, y_res)`: the originals first, then the synthetic images."""
    return self.fit(X, y).resample(X, y)
