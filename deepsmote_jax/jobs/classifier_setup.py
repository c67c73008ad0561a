"""What every classifier run (whole images or tiles) reads from the config: the training settings and model
of `config.classifier` (with its Keras weights, `config.classifier.weights`), the parsed
`config.generate.sampling_strategy`, and the marker of a finished run."""

from __future__ import annotations

import json
import os
import pathlib
import typing
import warnings

from deepsmote_jax import config_lib
from deepsmote_jax.models import classifiers
from deepsmote_jax.models.classifiers import WeightMismatchError, build_classifier, load_keras_weights
from deepsmote_jax.models.classifiers.keras_weights import KerasApplication
from deepsmote_jax.train.classifier import ClassifierTrainConfig
from deepsmote_jax.train.precision import compute_dtype

RUN_INFO = "run.json"  # written last in a run's folder: the run finished
# Keys of config.classifier that are not training settings.
MODEL_KEYS = ("name", "kwargs", "weights")
WEIGHT_SUFFIXES = (".keras", ".h5")


def _keras_twin(name: str) -> bool:
  """Whether classifier `name` is the Flax twin of a keras.applications model (can load Keras weights)."""
  by_name = {n.lower(): getattr(classifiers, n) for n in classifiers.__all__}
  ctor = by_name.get(name.replace("_", "").lower())
  cls = typing.get_type_hints(ctor).get("return") if callable(ctor) and not isinstance(ctor, type) else ctor
  return isinstance(cls, type) and issubclass(cls, KerasApplication)


def check_weights(config) -> str:
  """`config.classifier.weights` checked without loading it (the file, its kind, the architecture); returns
  the path ('' = none). Errors are one line naming the setting."""
  path = str(config.classifier.get("weights", "") or "")
  if not path:
    return ""
  setting = f"config.classifier.weights={path!r}"
  if not path.endswith(WEIGHT_SUFFIXES):
    raise ValueError(f"{setting}: expected a .keras or .h5 Keras weight file")
  if not os.path.isfile(path):
    raise ValueError(f"{setting} is not a file")
  name = config.classifier.name
  if not _keras_twin(name):
    raise ValueError(
      f"{setting}: config.classifier.name={name!r} has no keras.applications counterpart to load Keras weights "
      "into; use inception_v3, resnet50, xception, efficientnet_b0 or efficientnet_b5, or set weights=''"
    )
  return path


def weights_fingerprint(config) -> dict | None:
  """The weight file's resolved path, size and modification time (None without one), for stage records."""
  path = str(config.classifier.get("weights", "") or "")
  if not path:
    return None
  p = pathlib.Path(path)
  st = p.stat()
  return {"path": str(p.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def load_weights(config, model) -> int:
  """Loads `config.classifier.weights` into `model` (all or nothing); returns the tensors copied (0: none).

  All of the file when it fits; otherwise every layer but the 'predictions' head, which keeps its
  initialisation (a file with another number of classes, e.g. ImageNet's 1000). Any other mismatch (another
  architecture, other input channels) is a one-line ValueError naming the setting and the first tensor."""
  path = check_weights(config)
  if not path:
    return 0
  setting = f"config.classifier.weights={path!r}"
  try:
    try:
      return load_keras_weights(model, path)
    except WeightMismatchError:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the head is re-initialised on purpose
        return load_keras_weights(model, path, skip_top=True)
  except WeightMismatchError as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    count = lines[0].split(" tensor(s)")[0]
    first = lines[1] if len(lines) > 1 else lines[0]
    raise ValueError(
      f"{setting} does not fit config.classifier.name={config.classifier.name!r} "
      f"({model.in_channels} input channel(s)): {count} tensor(s) do not match, e.g. {first}"
    ) from None
  except (OSError, ValueError, KeyError, ImportError) as e:
    detail = str(e).splitlines()[0] if str(e) else repr(e)
    raise ValueError(f"{setting} cannot be read as Keras weights: {detail}") from None


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
  """(training settings, model) of `config.classifier` for images of `image_shape` (H, W, C): initialised with
  `seed`, then filled from `config.classifier.weights` when set (`load_weights`)."""
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
  load_weights(config, model)
  return tcfg, model
