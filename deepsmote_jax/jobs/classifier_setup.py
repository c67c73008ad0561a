"""What every classifier run (whole images or tiles) reads from the config: the training settings and model
of `config.classifier`, the parsed `config.generate.sampling_strategy`, and the marker of a finished run."""

from __future__ import annotations

import json

from deepsmote_jax import config_lib
from deepsmote_jax.models.classifiers import build_classifier
from deepsmote_jax.train.classifier import ClassifierTrainConfig
from deepsmote_jax.train.precision import compute_dtype

RUN_INFO = "run.json"  # written last in a run's folder: the run finished
# Keys of config.classifier that are not training settings.
MODEL_KEYS = ("name", "kwargs")


def sampling_strategy(value):
  """`config.generate.sampling_strategy` as imbalanced-learn takes it: a name ('auto', 'minority', 'not majority',
  ...), a float (a ratio, two classes), or a JSON dict of target counts per class ('{"NG": 200}')."""
  if isinstance(value, str):
    v = value.strip()
    if v.startswith("{"):
      try:
        counts = json.loads(v)
      except json.JSONDecodeError as e:
        raise ValueError(f"config.generate.sampling_strategy={value!r} is not valid JSON: {e}") from None
      if not isinstance(counts, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in counts.values()
      ):
        raise ValueError(f"config.generate.sampling_strategy={value!r}: the target counts must be integers")
      return counts
    try:
      return float(v)
    except ValueError:
      return v
  return value


def build(config, *, num_classes: int, image_shape: tuple, seed: int, class_weighting: str, oversampling: str):
  """(training settings, freshly initialised model) of `config.classifier` for images of `image_shape`
  (H, W, C), seeded with `seed`."""
  c = config.classifier
  tcfg = config_lib.to_dataclass(
    ClassifierTrainConfig,
    c,
    "classifier",
    ignore=MODEL_KEYS,
    class_weighting=class_weighting,
    oversampling=oversampling,
    seed=int(seed),
  )
  model = build_classifier(
    c.name,
    num_classes,
    in_channels=int(image_shape[-1]),
    image_size=int(image_shape[0]),
    dtype=compute_dtype(tcfg.compute_dtype),
    seed=int(seed),
    **dict(c.kwargs),
  )
  return tcfg, model
