"""Defect-classifier training on the shared machinery (mesh, jit + scan, bf16 policy, Orbax, progress).

Baselines for imbalance: class-weighted cross-entropy ('balanced' = n / (C * n_c), as scikit-learn) and plain
random oversampling (each epoch draws every class up to the majority count). Augmentations fit inspection
images: random horizontal/vertical flips and small shifts (zero padding), applied inside the jitted step.
With a validation set, every epoch is scored on the device state and the best model by a validation metric
(threshold-free average precision by default, ties broken by log-likelihood) is kept (the jobs export it).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from deepsmote_jax import metrics as M
from deepsmote_jax.models.pixels import to_unit_range
from deepsmote_jax.train import feed, loop
from deepsmote_jax.train import mesh as mesh_lib

# Validation metrics that can pick the best epoch. The threshold-free ones rank the positive class's logit
# (one-vs-rest beyond two classes) and are the honest choice when a class has a handful of images: argmax
# metrics such as ACSA sit at 0.5 for a classifier predicting one class and tie on every epoch.
THRESHOLD_FREE_METRICS = ("average_precision", "roc_auc")
SELECT_METRICS = THRESHOLD_FREE_METRICS + ("acsa", "macro_f1", "accuracy", "g_mean", "ng_recall", "neg_loss")
NEEDS_POSITIVE = THRESHOLD_FREE_METRICS + ("ng_recall",)


@dataclasses.dataclass(frozen=True)
class ClassifierTrainConfig:
  epochs: int = 10
  batch_size: int = 32
  learning_rate: float = 1e-3
  optimizer: str = "adam"  # 'adam' | 'sgd' (momentum 0.9)
  weight_decay: float = 0.0
  class_weighting: str = "none"  # 'none' | 'balanced'
  oversampling: str = "none"  # 'none' | 'random'
  flip_lr: bool = True
  flip_ud: bool = True
  max_shift: int = 4  # pixels
  aux_weight: float = 0.4  # InceptionV3 auxiliary head
  steps_per_call: int = 10
  compute_dtype: str = "auto"
  select_metric: str = "average_precision"  # validation metric that picks the best epoch (ties: neg_loss)
  seed: int = 0

  def validate(self) -> None:
    """Raises ValueError for a bad setting; each message starts with the field's name."""
    choices = {
      "optimizer": ("adam", "sgd"),
      "class_weighting": ("none", "balanced"),
      "oversampling": ("none", "random"),
      "select_metric": SELECT_METRICS,
    }
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {allowed}")
    for name in ("epochs", "batch_size", "steps_per_call"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not float(self.learning_rate) > 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if float(self.weight_decay) < 0 or int(self.max_shift) < 0:
      raise ValueError(f"weight_decay and max_shift must be >= 0, got {self.weight_decay}, {self.max_shift}")


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  if mode == "none":
    return np.ones(num_classes, np.float32)
  if (counts == 0).any():
    raise ValueError(f"class weighting needs every class in the training set; counts {counts.astype(int).tolist()}")
  return (counts.sum() / (num_classes * counts)).astype(np.float32)


def to_model_input(images_u8: jax.Array, in_channels: int) -> jax.Array:
  """uint8 NHWC -> float32 [-1, 1], grayscale replicated when the model expects 3 channels."""
  x = to_unit_range(images_u8)
  if x.shape[-1] == 1 and in_channels == 3:
    x = jnp.repeat(x, 3, axis=-1)
  return x


def augment(key: jax.Array, x: jax.Array, *, flip_lr: bool, flip_ud: bool, max_shift: int) -> jax.Array:
  """Per-image random flips and integer shifts (zero fill), inside jit."""

  def one(k, img):
    k1, k2, k3 = jax.random.split(k, 3)
    if flip_lr:
      img = jnp.where(jax.random.bernoulli(k1), img[:, ::-1], img)
    if flip_ud:
      img = jnp.where(jax.random.bernoulli(k2), img[::-1], img)
    if max_shift > 0:
      h, w, _ = img.shape
      padded = jnp.pad(img, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)))
      dy, dx = jax.random.randint(k3, (2,), 0, 2 * max_shift + 1)
      img = jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, img.shape[-1]))
    return img

  return jax.vmap(one)(jax.random.split(key, x.shape[0]), x)


def _split_logits(out):
  return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


def make_step(graphdef, tx, cfg: ClassifierTrainConfig, in_channels: int):
  """Pure step: weighted, masked cross-entropy (+ aux head), augmentation in-jit."""

  def step(state: loop.TrainState, batch, key, data):
    k_aug, k_drop = jax.random.split(jax.random.fold_in(key, state.step))
    if "image" in batch:  # read on the host (`feed.FedPlan`)
      x_u8, y = batch["image"], batch["label"]
    else:  # indices into the device-resident training set
      x_u8, y = data["images"][batch["index"]], data["labels"][batch["index"]]
    x = augment(
      k_aug, to_model_input(x_u8, in_channels), flip_lr=cfg.flip_lr, flip_ud=cfg.flip_ud, max_shift=cfg.max_shift
    )
    w = data["class_weights"][y] * batch["mask"].astype(jnp.float32)

    def loss_fn(params):
      model = loop.merge_model(graphdef, params, state.batch_stats)
      _reseed_dropout(model, k_drop)
      logits, aux = _split_logits(model(x, train=True))
      ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
      loss = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1e-6)
      if aux is not None:
        ce_aux = optax.softmax_cross_entropy_with_integer_labels(aux.astype(jnp.float32), y)
        loss = loss + cfg.aux_weight * jnp.sum(ce_aux * w) / jnp.maximum(jnp.sum(w), 1e-6)
      acc = jnp.sum((jnp.argmax(logits, -1) == y) * batch["mask"]) / jnp.maximum(jnp.sum(batch["mask"]), 1)
      return loss, (acc, loop.batch_stats_of(model))

    (loss, (acc, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loop.apply_gradients(state, grads, tx, stats), {"loss": loss, "train_acc": acc}

  return step


def _reseed_dropout(model, key) -> None:
  """Dropout layers draw from a key derived from (seed, step), so runs are reproducible and resumable."""
  for _, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Dropout) and getattr(node, "rngs", None) is not None:
      node.rngs = nnx.Rngs(dropout=key)


class ClassifierBatchPlan(loop.EpochPlan):
  """Shuffled epochs; with random oversampling every class is drawn up to the majority count each epoch."""

  def __init__(self, labels: np.ndarray, batch_size: int, seed: int, oversampling: str):
    self.labels, self.oversampling = np.asarray(labels), oversampling
    counts = np.bincount(self.labels)
    size = int(counts.max() * (counts > 0).sum()) if oversampling == "random" else len(self.labels)
    super().__init__(size, batch_size, seed)

  def epoch_order(self, rng):
    if self.oversampling != "random":
      return rng.permutation(len(self.labels))
    target = np.bincount(self.labels).max()
    parts = []
    for c in np.unique(self.labels):
      members = np.flatnonzero(self.labels == c)
      parts += [members, rng.choice(members, target - len(members))]
    return rng.permutation(np.concatenate(parts))


def predict_proba(model, images_u8: np.ndarray, *, in_channels: int, batch_size: int = 128) -> np.ndarray:
  """Eval-mode class probabilities (N, C) in batches of one compiled shape."""
  graphdef, params, stats = loop.split_model(model)
  params, stats = jax.device_put((params, stats))  # once, not once per batch
  return loop.batched(lambda x: _probs(graphdef, in_channels, params, stats, x), loop.as_images(images_u8), batch_size)


def probability_fn(model, in_channels: int) -> Callable[[jax.Array], jax.Array]:
  """The eval-mode forward pass as a pure function of uint8 images -> class probabilities, with the model's
  weights bound in (what `jax.export` serializes for deployment)."""
  graphdef, params, stats = loop.split_model(model)
  return functools.partial(_probs, graphdef, in_channels, params, stats)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _probs(graphdef, in_channels, params, stats, x):
  """Module-level and keyed on the (hashable) graphdef, so repeated evaluations reuse one compilation."""
  m = loop.merge_model(graphdef, params, stats)
  logits, _ = _split_logits(m(to_model_input(x, in_channels), train=False))
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def selection_score(metric: str, y_true: np.ndarray, proba: np.ndarray, positive: int | None) -> float:
  """Validation score of one epoch, higher is better; an undefined metric (NaN) is -inf.

  'average_precision' / 'roc_auc' rank `metrics.positive_logit` of the positive class against the rest;
  'neg_loss' is the mean log-likelihood of the true classes (probabilities clipped at 1e-12).
  """
  y_true = np.asarray(y_true)
  check_select_metric(metric, positive)
  if metric == "neg_loss":
    p = np.clip(proba[np.arange(len(y_true)), y_true], 1e-12, 1)
    return float(np.mean(np.log(p)))
  if metric in THRESHOLD_FREE_METRICS:
    y_bin, score = (y_true == positive).astype(np.int64), M.positive_logit(proba, positive)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", M.UndefinedMetricWarning)
      value = M.average_precision(y_bin, score) if metric == "average_precision" else M.roc_auc(y_bin, score)
    return float(value) if value == value else -np.inf
  cm = M.confusion_matrix(y_true, proba.argmax(-1), proba.shape[1])
  if metric == "ng_recall":
    value = M.binary_report(_binary_cm(cm, positive))["recall"]
    return float(value) if value == value else -np.inf
  rep = M.multiclass_report(cm)
  value = {"acsa": rep["acsa"], "macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"], "g_mean": rep["g_mean"]}[
    metric
  ]
  return float(value) if value == value else -np.inf


def check_select_metric(metric: str, positive: int | None) -> None:
  """One-line ValueError for a selection metric that cannot be computed."""
  if metric not in SELECT_METRICS:
    raise ValueError(f"config.classifier.select_metric={metric!r}: choose one of {SELECT_METRICS}")
  if metric in NEEDS_POSITIVE and positive is None:
    raise ValueError(
      f"config.classifier.select_metric={metric!r} needs a positive (NG) class: set config.pipeline.positive_class "
      "or select by one of ('acsa', 'macro_f1', 'accuracy', 'g_mean', 'neg_loss')"
    )


class EpochSelector:
  """Keeps the best epoch by (select_metric, neg_loss): validation log-likelihood breaks exact ties (and an
  undefined metric), so a metric stuck at one value (ACSA 0.5 for a one-class predictor) does not silently
  keep the first epoch. `summary()` says how many epochs tied and whether the tie-break decided."""

  def __init__(self, metric: str, positive: int | None):
    check_select_metric(metric, positive)
    self.metric, self.positive = metric, positive
    self.history: list[dict] = []  # {'step', metric, 'neg_loss'} per evaluation
    self.best: dict | None = None

  def update(self, step: int, y_true: np.ndarray, proba: np.ndarray) -> bool:
    """Scores one evaluation; True when it is the new best."""
    score = selection_score(self.metric, y_true, proba, self.positive)
    loss = score if self.metric == "neg_loss" else selection_score("neg_loss", y_true, proba, self.positive)
    record = {"step": int(step), self.metric: score, "neg_loss": loss}
    self.history.append(record)
    if self.best is None or (score, loss) > (self.best[self.metric], self.best["neg_loss"]):
      self.best = record
      return True
    return False

  def summary(self) -> dict:
    """best_step, best_score, and the tie bookkeeping (select_ties, select_tie_break, select_history)."""
    if self.best is None:
      return {"best_step": None, "best_score": None, "select_ties": 0, "select_tie_break": None}
    top = self.best[self.metric]
    ties = sum(1 for r in self.history if r[self.metric] == top)
    undefined = top == -np.inf
    tie_break = None
    if ties > 1:
      tie_break = f"{ties} epochs {'had no defined ' + self.metric if undefined else 'tied on ' + self.metric}: "
      tie_break += f"kept step {self.best['step']}, the highest validation neg_loss ({self.best['neg_loss']:.4g})"
    return {
      "best_step": self.best["step"],
      "best_score": None if undefined else top,
      "best_neg_loss": self.best["neg_loss"],
      "select_ties": ties,
      "select_tie_break": tie_break,
      "select_history": list(self.history),
    }


class BestEpoch:
  """The `evaluate` callback of `loop.run` that keeps the best epoch: `labels_and_proba(state)` gives the
  validation labels and probabilities of the device state, `selector` ranks them, and the best epoch's
  variables are copied on the device (the state itself is donated to the next call)."""

  def __init__(self, selector: EpochSelector, labels_and_proba: Callable[[Any], tuple[np.ndarray, np.ndarray]]):
    self.selector, self.labels_and_proba, self.variables = selector, labels_and_proba, None

  def __call__(self, step: int, state) -> dict:
    if self.selector.update(step, *self.labels_and_proba(state)):
      self.variables = jax.tree.map(jnp.copy, (state.params, state.batch_stats))
    last, metric = self.selector.history[-1], self.selector.metric
    return {metric: last[metric], "neg_loss": last["neg_loss"], "best_step": self.selector.best["step"]}

  @staticmethod
  def models(keeper: BestEpoch | None, graphdef, state) -> tuple[Any, Any]:
    """(final model, best model) on the host; the best is the final one without a kept epoch."""
    final = loop.merge_model(graphdef, jax.device_get(state.params), jax.device_get(state.batch_stats))
    if keeper is None or keeper.variables is None:
      return final, final
    return final, loop.merge_model(graphdef, *jax.device_get(keeper.variables))

  @staticmethod
  def summary(keeper: BestEpoch | None) -> dict:
    return keeper.selector.summary() if keeper is not None else {"best_step": None, "best_score": None}


def _binary_cm(cm: np.ndarray, positive: int) -> np.ndarray:
  neg = [i for i in range(len(cm)) if i != positive]
  tn = cm[np.ix_(neg, neg)].sum()
  fp = cm[np.ix_(neg, [positive])].sum()
  fn = cm[np.ix_([positive], neg)].sum()
  tp = cm[positive, positive]
  return np.array([[tn, fp], [fn, tp]])


def make_optimizer(cfg: ClassifierTrainConfig) -> optax.GradientTransformation:
  if cfg.optimizer == "adam":
    return (
      optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
      if cfg.weight_decay
      else optax.adam(cfg.learning_rate)
    )
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.sgd(cfg.learning_rate, momentum=0.9))


@dataclasses.dataclass
class ClassifierTraining(loop.Training):
  """A prepared classifier run (whole images, or tiles in bags): `loop.Training` and the model's input
  channels, which its validation evaluation needs."""

  in_channels: int


def classifier_training(
  model, cfg: ClassifierTrainConfig, make_step_fn, *, mesh, plan, data: dict, in_channels: int
) -> ClassifierTraining:
  """The prepared run of a classifier on whole images or MIL tiles: the classifier's optimizer, the host
  arrays `data` placed on the mesh and `make_step_fn(graphdef, tx, cfg, in_channels)` compiled."""
  tx = make_optimizer(cfg)
  graphdef, state = loop.create_state(model, tx)
  return ClassifierTraining(
    cfg=cfg,
    mesh=mesh,
    graphdef=graphdef,
    state=state,
    plan=plan,
    data=mesh_lib.put(data, mesh_lib.replicated(mesh)),
    step_fn=make_step_fn(graphdef, tx, cfg, in_channels),
    in_channels=in_channels,
  )


def prepare_training(
  model,
  images_u8: np.ndarray | feed.ImageSource,
  labels: np.ndarray,
  cfg: ClassifierTrainConfig,
  *,
  num_classes: int,
  mesh=None,
) -> ClassifierTraining:
  """Checks the inputs, places the training set (or sets up its stream) and compiles the step (shared by
  `train_classifier` and `benchmarks/classifier_step.py`)."""
  cfg.validate()
  cfg = dataclasses.replace(cfg, steps_per_call=loop.steps_per_call_for_backend(cfg.steps_per_call))
  streamed = isinstance(images_u8, feed.ImageSource)
  labels = np.asarray(labels, np.int32)
  shape = feed.images_shape(images_u8)
  if not streamed:
    images_u8 = np.asarray(images_u8)
  if len(shape) != 4 or (not streamed and images_u8.dtype != np.uint8):
    raise ValueError(f"images must be uint8 (N, H, W, C), got {getattr(images_u8, 'dtype', 'uint8')} {shape}")
  if len(labels) != shape[0]:
    raise ValueError(f"{shape[0]} images but {len(labels)} labels")
  in_channels = int(getattr(model, "in_channels", shape[-1]))
  if shape[-1] not in (in_channels, 1):
    raise ValueError(f"images have {shape[-1]} channels but the classifier expects {in_channels}")
  mesh = mesh or mesh_lib.make_mesh()
  mesh_lib.check_batch_divisible(cfg.batch_size, mesh)
  plan = ClassifierBatchPlan(labels, cfg.batch_size, cfg.seed, cfg.oversampling)
  weights = class_weights(labels, num_classes, cfg.class_weighting)
  if streamed:
    total = cfg.epochs * plan.steps_per_epoch
    plan = feed.FedPlan(plan, images_u8, mesh=mesh, total_steps=total, images_of={"index": "image"}, labels=labels)
    data = {"class_weights": weights}
  else:
    data = {"images": images_u8, "labels": labels, "class_weights": weights}
  return classifier_training(model, cfg, make_step, mesh=mesh, plan=plan, data=data, in_channels=in_channels)


@dataclasses.dataclass
class ClassifierResult:
  model: Any
  best_model: Any
  summary: dict


class ValidationEval:
  """Validation probabilities straight from the device train state: one jitted, sharded eval step.

  The validation images come in whole chunks split over 'data' (`feed.HeldOutImages`: placed on the mesh
  once, or read chunk by chunk when streamed); each evaluation reads the replicated parameters where they
  already are, so no weights cross to the host and back.
  """

  def __init__(self, graphdef, in_channels: int, images_u8, mesh, chunk: int = 128):
    self.chunks = feed.HeldOutImages(images_u8, mesh, chunk)
    sharding, repl = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)

    def probs(params, stats, x):
      return _probs(graphdef, in_channels, params, stats, x)

    self._probs = jax.jit(probs, in_shardings=(repl, repl, sharding), out_shardings=repl)

  def __call__(self, state: loop.TrainState) -> np.ndarray:
    out = [self._probs(state.params, state.batch_stats, x) for x, _ in self.chunks]
    return np.concatenate(jax.device_get(out))[: self.chunks.n]


def train_classifier(
  model,
  images_u8: np.ndarray,
  labels: np.ndarray,
  cfg: ClassifierTrainConfig,
  *,
  num_classes: int,
  val: tuple[np.ndarray, np.ndarray] | None = None,
  positive: int | None = None,
  mesh=None,
  workdir: str | None = None,
  checkpoint_every_steps: int = 0,
  resume: bool = False,
  overwrite: bool = False,
  progress: bool = True,
) -> ClassifierResult:
  """Trains `model` on uint8 images; with `val`, scores each epoch on it and keeps the best model by
  `cfg.select_metric` (`best_model`; the final one is `model`), exact ties broken by validation neg_loss
  (`EpochSelector`; the summary records ties and tie-break). `workdir` gets metrics.jsonl and checkpoints.

  By default the training set lives on the device and batches are index arrays. `images_u8` may instead be
  a `feed.ImageSource` (e.g. `data.file_images.FileImages`): the same batches are read on the host step by
  step (`feed.FedPlan`), for sets larger than device or host memory.
  """
  if val is not None:  # before anything is compiled
    check_select_metric(cfg.select_metric, positive)
  setup = prepare_training(model, images_u8, labels, cfg, num_classes=num_classes, mesh=mesh)
  cfg, plan, graphdef = setup.cfg, setup.plan, setup.graphdef
  shapes = [d for v in jax.tree.leaves(setup.state.params) for d in (len(np.shape(v)), *np.shape(v))]
  run_id = {
    "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("epochs", "steps_per_call")},
    "model": loop.fingerprint(np.asarray(shapes, np.int64)),
    "data": feed.fingerprint(images_u8, labels),
  }
  keeper = None
  if val is not None:
    val_probs = ValidationEval(graphdef, setup.in_channels, loop.as_images(val[0]), setup.mesh)
    keeper = BestEpoch(EpochSelector(cfg.select_metric, positive), lambda st: (np.asarray(val[1]), val_probs(st)))
  state, summary = setup.run(
    metadata={"run": run_id},
    evaluate=keeper,
    workdir=workdir,
    checkpoint_every_steps=checkpoint_every_steps,
    resume=resume,
    overwrite=overwrite,
    images_per_step=cfg.batch_size,
    progress=progress,
    description="classifier",
  )
  final, best_model = BestEpoch.models(keeper, graphdef, state)
  summary.update(BestEpoch.summary(keeper), select_metric=cfg.select_metric, steps_per_epoch=plan.steps_per_epoch)
  return ClassifierResult(model=final, best_model=best_model, summary=summary)
