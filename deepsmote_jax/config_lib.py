"""Building blocks of the `get_config()` files (ml_collections ConfigDicts, overridable from the command line).

One config describes a whole job: `model`/`data`/`train`/`checkpoint` are what `scripts/train_autoencoder.py`
reads; `split`, `imbalance`, `generate`, `classifier` and `pipeline` are added for `scripts/run_pipeline.py`.
"""

from __future__ import annotations

import dataclasses

import ml_collections


def autoencoder_config(*, preset: str, channels: int, epochs: int, batch_size: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # out_channels: the decoder's output channels, 0 = the same as `channels` (the paper's Fig. 3 is
  # channels=1, out_channels=3, trained with the grayscale target broadcast to 3 channels).
  c.model = ml_collections.ConfigDict(dict(preset=preset, channels=channels, out_channels=0))
  c.data = ml_collections.ConfigDict(
    dict(
      source="folder",
      root="",
      name="",
      split="train",
      data_dir="",
      resize="resize",
      on_error="raise",
      min_per_class=2,
      classes=(),
      include_intermediate=False,
      # Large images at their own scale (deepsmote_jax/data/tiles.py): mode 'none' resizes whole images to the
      # model's size; 'tiles' cuts native-resolution tiles (size/stride in px, 0 = the model's size) and scores
      # each image by the mean of its top_k tile NG probabilities (training: multiple-instance bags);
      # 'defect_crops' trains on crops around mask regions (mask_root/<class>/<stem><mask_suffix>).
      patches=ml_collections.ConfigDict(
        dict(
          mode="none",
          size=0,
          stride=0,
          min_std=0.0,
          top_k=1,
          mask_root="",
          mask_suffix=".png",
          ok_tiles_per_image=0,
        )
      ),
      # Test images from another line or camera (one subfolder per class, classes known to training): never
      # used for training, selection or thresholds; the data is then split into train/validation only.
      test_root="",
      # 'auto': a folder source is streamed from disk (decoded step by step, never held whole) when its
      # decoded images would exceed stream_budget_mb, and loaded in memory below; 'true' / 'false' force it.
      stream="auto",
      stream_budget_mb=4096,
      # Where a stream keeps the images it decoded for later epochs (freed when the run ends): 'disk' (a file
      # under $TMPDIR), an existing directory, or 'off' (decode every image every epoch).
      stream_cache="disk",
    )
  )
  c.train = ml_collections.ConfigDict(
    dict(
      epochs=epochs,
      batch_size=batch_size,
      learning_rate=2e-4,
      penalty="reference",
      penalty_weight=1.0,
      penalty_sample_size=100,
      # 'uniform' (released code) | 'inverse_count': the penalty's class drawn with probability ~ 1/count.
      penalty_classes="uniform",
      # Weight of the edge (pixel-difference) error beside the reconstruction MSE, in both loss terms; 0: the
      # paper's MSE. Thin defects (cracks, scratches) are a tiny share of the MSE but most of the edge error.
      edge_weight=0.0,
      steps_per_call=10,
      compute_dtype="auto",
      # With validation images: the exported state is the best by 'psnr' | 'ssim' (mean over classes of
      # the per-class mean), or 'last'; scored every epoch end (eval_every_steps=0) or every N steps.
      select_metric="psnr",
      eval_every_steps=0,
      # Share of each class held out of the training images for validation, only where no validation images
      # exist (an in-memory set, an empty validation split); the pipeline and train-autoencoder use the data
      # stage's validation split.
      val_fraction=0.0,
      seed=0,
    )
  )
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=3))
  c.workdir = f"runs/{preset}"
  add_pipeline(c)
  return c


def add_pipeline(c: ml_collections.ConfigDict) -> None:
  """Sections of the end-to-end job (split, imbalance, generation, classifiers, comparison)."""
  # Train/validation/test split; group_pattern: regex whose first group keys a physical item ('' = file stem).
  c.split = ml_collections.ConfigDict(dict(ratios=(0.6, 0.2, 0.2), group_pattern="", seed=0))
  # Make the training split scarce in NG, as on a production line: keep `ok_count` OK images (0 = all) and
  # cut every other class to `minority_ratio` x OK (0 = keep as is). Validation/test stay untouched.
  # scarce_classes (e.g. ('scratches',) among NEU-DET's six): cut only these, to `minority_ratio` x the mean
  # training count of the other classes, and keep every other class as it is (ok_class unused, ok_count 0).
  c.imbalance = ml_collections.ConfigDict(
    dict(ok_class="OK", ok_count=0, minority_ratio=0.0, scarce_classes=(), seed=0)
  )
  # synthesis: 'decode' (the paper: the decoded synthetic code) | 'residual' (the base image plus the decoded
  # change from its code: detail the decoder loses, such as thin cracks and texture, is kept from the base).
  c.generate = ml_collections.ConfigDict(
    dict(sampling_strategy="auto", kind="smote", k_neighbors=5, seed=0, synthesis="decode")
  )
  c.classifier = ml_collections.ConfigDict(
    dict(
      name="small_cnn",
      kwargs=ml_collections.ConfigDict({}),
      epochs=10,
      batch_size=32,
      learning_rate=1e-3,
      optimizer="adam",
      weight_decay=0.0,
      flip_lr=True,
      flip_ud=True,
      max_shift=4,
      steps_per_call=10,
      compute_dtype="auto",
      # Picks the best epoch on validation: 'average_precision' / 'roc_auc' of the positive class (threshold-free,
      # sound with a handful of NG), or an argmax metric; exact ties are broken by validation log-likelihood.
      select_metric="average_precision",
      # A .keras / .h5 file of Keras weights for the classifier (a keras.applications architecture, e.g. the
      # ImageNet downloads; '' = random initialisation), loaded before training: all of it when it fits, else
      # every layer but the 'predictions' head (another number of classes); a file that does not fit is an error.
      weights="",
    )
  )
  c.pipeline = ml_collections.ConfigDict(
    dict(
      methods=("none", "class_weights", "random_oversampling", "smote_pixels", "deepsmote"),
      penalties=("reference",),
      seeds=(0, 1),
      positive_class="NG",
      target_recall=0.98,
      # Recall-first threshold on validation NG scores (metrics.choose_threshold): 'tolerance' (normal tolerance
      # bound: P(NG recall >= target_recall) >= threshold_confidence if NG logits are normal), 'min_ng' (lowest
      # validation NG score, distribution-free) or 'val_quantile' (highest threshold with validation recall >=
      # target, no guarantee). threshold_margin (logit units, >= 0) lowers it further.
      threshold_rule="tolerance",
      threshold_confidence=0.95,
      threshold_margin=0.0,
      # The one-class baseline's score (anomaly_ae): w > 0 = an image's (or tile's) largest mean squared
      # reconstruction error over any w x w window of model pixels (a small defect is not averaged away by the
      # rest of the image); 0 = its mean squared error. 8 (1/8 of a 64 px model): on magnetic_tile blowhole crops
      # (validation, seed 0) ROC AUC 0.54 at 0, 0.63 at 4, 0.67 at 8, 0.65 at 16.
      anomaly_window=8,
      # Stratified percentile bootstrap over test images for 95 % intervals (0 = none), and its seed.
      bootstrap=2000,
      bootstrap_seed=0,
    )
  )


def make_local(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config to a quick CPU run of the same code path (the big_vision 'local' variant)."""
  c.train.epochs = 2
  c.train.batch_size = 8
  c.train.penalty_sample_size = 8
  c.train.steps_per_call = 2
  c.checkpoint.every_steps = 4
  c.classifier.epochs = 2
  c.classifier.batch_size = 8
  c.classifier.steps_per_call = 2
  c.pipeline.seeds = (0,)


def to_dataclass(cls, section, name: str, *, ignore: tuple[str, ...] = (), **overrides):
  """`config.<name>` (a ConfigDict or mapping) -> `cls(**section, **overrides)`, checked.

  Unknown keys and invalid values are `ValueError`s that name the setting as the user writes it
  (`config.<name>.<key>`): the dataclass's `validate()` starts each message with the field name.
  `ignore` lists keys of the section that belong to someone else (e.g. the classifier's `name`).
  """
  values = {k: v for k, v in dict(section).items() if k not in ignore}
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"config.{name} has unknown setting(s) {unknown}; known: {sorted(fields - set(overrides))}")
  result = cls(**{**values, **overrides})
  validate = getattr(result, "validate", None)
  if validate is not None:
    try:
      validate()
    except ValueError as e:
      raise ValueError(f"config.{name}.{e}") from None
  return result


def deepsmote_tfds_config(preset: str, channels: int, dataset: str, arg: str | None) -> ml_collections.ConfigDict:
  """The DeepSMOTE paper's setting on a TFDS dataset (200 epochs, batch 100); `arg='local'` shrinks it."""
  c = autoencoder_config(preset=preset, channels=channels, epochs=200, batch_size=100)
  c.data.source = "tfds"
  c.data.name = dataset
  if arg == "local":
    make_local(c)
  return c
