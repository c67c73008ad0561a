"""DeepSMOTE encoder/decoder training: loss, penalty variants, the jitted step and the training entry point.

Loss = reconstruction error over a batch + `penalty_weight` * penalty, where the penalty is computed on a
sample of one class drawn inside the jitted step (no host round trip, static shapes). The reconstruction error
is the MSE, plus `edge_weight` times the MSE of the images' horizontal and vertical pixel differences (the
gradient-difference loss of Mathieu, Couprie & LeCun, ICLR 2016), in both the reconstruction and the penalty
term: a 1-pixel crack is a tiny share of an image's squared error but most of its edge error, so a decoder
trained on MSE alone may blur it away at no cost.

* `reference` -- as the released DeepSMOTE code: one class drawn uniformly, up to `penalty_sample_size` of
  its images (without replacement), encoded in train mode with the encoder output treated as a constant
  (`stop_gradient`), the same cyclic shift (j -> j+1) applied to codes and target images, decoded and
  compared. No gradient reaches the encoder through this term.
* `paper` -- Algorithm 1 of the DeepSMOTE paper: the codes of the class sample (gradient flowing into the
  encoder) are permuted (a random cyclic shift by 1..n-1, so no code keeps its place), decoded, and
  compared with the sample in its original order.
* `none` -- reconstruction only.

The penalty's class is drawn among the classes with >= 2 images: uniformly (`penalty_classes='uniform'`, the
released code) or with probability proportional to 1/count (`'inverse_count'`, the class-weighted selection of
Ghanbari Azar, Lofstedt & Nyholm, "Rethinking the DeepSMOTE Penalty Term", ICTAI 2025): a class with 10
images is then the penalty's subject 10 times as often as one with 100.

With a validation split (`train_autoencoder(..., val=...)`) the eval-mode reconstructions of its images are
scored at every epoch end (or every `eval_every_steps`): PSNR and SSIM per class, on [0, 1] images. The
selection score is the mean over classes of the per-class mean, so the rare defect class weighs as much as
OK; the best state by `select_metric` is the one returned as `best_model` (and exported by the jobs).

The image set lives on the device as uint8 (4x less memory than float32) together with a per-class index
table; batches are index arrays. A class sample smaller than the static sample size is masked: the masked
rows count neither in the MSE nor in the BatchNorm statistics.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deepsmote_jax.models.autoencoder import Autoencoder
from deepsmote_jax.models.pixels import to_uint8, to_unit_range
from deepsmote_jax.models.presets import AutoencoderSpec
from deepsmote_jax.train import distributed, feed, loop
from deepsmote_jax.train import mesh as mesh_lib

PENALTIES = ("reference", "paper", "none")
PENALTY_CLASSES = ("uniform", "inverse_count")
SELECT_METRICS = ("psnr", "ssim", "last")
BEST_FILE = "best_val.npz"  # the best-so-far validation state, so a resumed run selects as an uninterrupted one


@dataclasses.dataclass(frozen=True)
class AETrainConfig:
  """Hyper-parameters of a DeepSMOTE encoder/decoder run (defaults: the released code's)."""

  epochs: int = 50
  batch_size: int = 100
  learning_rate: float = 2e-4
  penalty: str = "reference"
  penalty_weight: float = 1.0
  penalty_sample_size: int = 100
  penalty_classes: str = "uniform"  # 'uniform' (released code) | 'inverse_count' (probability ~ 1/count)
  edge_weight: float = 0.0  # weight of the pixel-difference (edge) error beside the MSE; 0: MSE only (the paper)
  steps_per_call: int = 10
  compute_dtype: str = "auto"
  select_metric: str = "psnr"  # with validation images: 'psnr' | 'ssim' (best state exported) | 'last'
  eval_every_steps: int = 0  # validation scoring period; 0: every epoch end
  val_fraction: float = 0.0  # standalone job only: share of each class held out for validation (0: none)
  seed: int = 0

  def validate(self) -> None:
    """Raises ValueError for a bad setting; each message starts with the field's name."""
    choices = {"penalty": PENALTIES, "penalty_classes": PENALTY_CLASSES, "select_metric": SELECT_METRICS}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {allowed}")
    for name in ("epochs", "batch_size", "penalty_sample_size", "steps_per_call"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("learning_rate", "penalty_weight"):
      if not float(getattr(self, name)) > 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
    if not float(self.edge_weight) >= 0:
      raise ValueError(f"edge_weight must be >= 0, got {self.edge_weight}")
    if int(self.eval_every_steps) < 0:
      raise ValueError(f"eval_every_steps must be >= 0, got {self.eval_every_steps}")
    if not 0 <= float(self.val_fraction) < 1:
      raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def class_index_table(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """(num_classes, max_count) image indices per class (padded with 0) and the per-class counts."""
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=num_classes).astype(np.int32)
  table = np.zeros((num_classes, max(int(counts.max()), 1)), np.int32)
  for c in range(num_classes):
    idx = np.flatnonzero(labels == c)
    table[c, : len(idx)] = idx
  return table, counts


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  if mask is None:
    return jnp.mean(err)
  per_image = jnp.mean(err.reshape(err.shape[0], -1), axis=1)
  m = mask.astype(jnp.float32)
  return jnp.sum(per_image * m) / jnp.maximum(jnp.sum(m), 1.0)


def reconstruction_error(pred: jax.Array, target: jax.Array, mask=None, *, edge_weight: float = 0.0) -> jax.Array:
  """Masked MSE + `edge_weight` * masked MSE of the horizontal and vertical pixel differences (NHWC)."""
  err = masked_mse(pred, target, mask)
  if edge_weight:
    for axis in (1, 2):
      err = err + edge_weight * masked_mse(jnp.diff(pred, axis=axis), jnp.diff(target, axis=axis), mask)
  return err


def penalty_class_logits(counts: jax.Array, classes: str = "uniform") -> jax.Array:
  """Log-probabilities (up to a constant) of drawing each class for the penalty; -inf below 2 images.

  'uniform': equal among eligible classes; 'inverse_count': proportional to 1 / count.
  """
  eligible = counts >= 2
  if classes == "uniform":
    return jnp.where(eligible, 0.0, -jnp.inf)
  if classes == "inverse_count":
    return jnp.where(eligible, -jnp.log(jnp.maximum(counts, 1).astype(jnp.float32)), -jnp.inf)
  raise ValueError(f"penalty_classes={classes!r}: choose one of {PENALTY_CLASSES}")


def sample_class(
  key: jax.Array,
  class_table: jax.Array,
  counts: jax.Array,
  sample_size: int,
  padded_size: int | None = None,
  *,
  classes: str = "uniform",
):
  """Draws a class among those with >= 2 images (by `classes`, see `penalty_class_logits`) and up to
  `sample_size` of its images.

  Returns (class, indices (padded_size,), valid mask, number valid). Static shapes: the sample is padded
  to `padded_size` (>= sample_size, e.g. a multiple of the device count) and masked.
  """
  padded_size = sample_size if padded_size is None else padded_size
  k_class, k_order = jax.random.split(key)
  c = jax.random.categorical(k_class, penalty_class_logits(counts, classes))
  n_c = counts[c]
  width = class_table.shape[1]
  scores = jax.random.uniform(k_order, (width,))
  scores = jnp.where(jnp.arange(width) < n_c, scores, 2.0)  # padding sorts last
  take = min(padded_size, width)
  order = jnp.argsort(scores)[:take]
  if take < padded_size:
    order = jnp.concatenate([order, jnp.zeros((padded_size - take,), order.dtype)])
  n_valid = jnp.minimum(n_c, sample_size)
  valid = jnp.arange(padded_size) < n_valid
  return c, class_table[c, order], valid, n_valid


def cyclic_shift(n_valid: jax.Array, size: int, shift: jax.Array | int = 1) -> jax.Array:
  """Permutation of [0, size) that rotates the first n_valid entries by `shift` and fixes the rest."""
  j = jnp.arange(size)
  return jnp.where(j < n_valid, (j + shift) % jnp.maximum(n_valid, 1), j)


def deepsmote_loss(
  model: Autoencoder,
  images,
  mask=None,
  *,
  penalty: str,
  class_images=None,
  valid=None,
  perm=None,
  penalty_weight: float = 1.0,
  edge_weight: float = 0.0,
):
  """Reconstruction error + penalty_weight * penalty on a class sample; returns (loss, {'recon', 'penalty'}).

  Both terms are `reconstruction_error` with `edge_weight` (0: the paper's MSE).
  Runs the model in train mode (BatchNorm batch statistics, updated in place on `model`). `perm` is the
  permutation of the class sample (a cyclic shift, see `cyclic_shift`); `valid` masks its padding.
  """
  z = model.encoder(images, train=True, mask=mask)
  recon = model.decoder(z, train=True, mask=mask)
  error = functools.partial(reconstruction_error, edge_weight=edge_weight)
  recon_loss = error(recon, images, mask)
  pen = jnp.zeros((), jnp.float32)
  if penalty == "reference":
    # Released code: codes detached; codes and targets shifted alike.
    codes = jax.lax.stop_gradient(model.encoder(class_images, train=True, mask=valid))
    decoded = model.decoder(codes[perm], train=True, mask=valid[perm])
    pen = error(decoded, class_images[perm], valid[perm])
  elif penalty == "paper":
    # Algorithm 1: permuted codes decoded and compared with the sample in its original order.
    codes = model.encoder(class_images, train=True, mask=valid)
    decoded = model.decoder(codes[perm], train=True, mask=valid)
    pen = error(decoded, class_images, valid)
  elif penalty != "none":
    raise ValueError(f"unknown penalty {penalty!r}; choose one of {PENALTIES}")
  return recon_loss + penalty_weight * pen, {"recon": recon_loss, "penalty": pen}


def make_step(graphdef, tx: optax.GradientTransformation, cfg: AETrainConfig, num_devices: int = 1):
  """The pure train step `(state, batch, key, data) -> (state, metrics)`.

  `batch = {'index': (B,) int32, 'mask': (B,) bool}`; `data = {'images': uint8 (N,H,W,C),
  'class_table': (C, M) int32, 'counts': (C,) int32}` (device-resident, replicated). The class sample is
  padded to a multiple of `num_devices` (masked), so the result does not depend on the device count.
  Streamed (`feed.FedPlan`), `batch` carries the images instead: 'image' (B,H,W,C) uint8 and the class
  sample's 'class_image' (P,H,W,C) uint8 and 'class_valid' (P,) bool, drawn on the host with the same key.
  """
  penalty = cfg.penalty
  p_size = cfg.penalty_sample_size
  p_padded = mesh_lib.round_up(p_size, num_devices)

  def step(state: loop.TrainState, batch, key, data):
    step_key = jax.random.fold_in(key, state.step)
    streamed = "image" in batch  # images read on the host (`feed.FedPlan`), else gathered here
    images = to_unit_range(batch["image"] if streamed else data["images"][batch["index"]])
    bmask = batch["mask"]

    sample = {}  # the penalty's class sample
    if penalty != "none":
      if streamed:  # the same class sample, drawn on the host by `PenaltySamplePlan`
        valid = batch["class_valid"]
        n_valid = jnp.sum(valid.astype(jnp.int32))
        class_images = to_unit_range(batch["class_image"])
      else:
        _, idx, valid, n_valid = sample_class(
          step_key, data["class_table"], data["counts"], p_size, p_padded, classes=cfg.penalty_classes
        )
        class_images = to_unit_range(data["images"][idx])
      if penalty == "reference":
        perm = cyclic_shift(n_valid, p_padded, 1)
      else:
        offset = jax.random.randint(jax.random.fold_in(step_key, 1), (), 1, jnp.maximum(n_valid, 2))
        perm = cyclic_shift(n_valid, p_padded, offset)
      sample = dict(class_images=class_images, valid=valid, perm=perm, penalty_weight=cfg.penalty_weight)

    def loss_fn(params):
      model: Autoencoder = loop.merge_model(graphdef, params, state.batch_stats)
      loss, terms = deepsmote_loss(model, images, bmask, penalty=penalty, edge_weight=cfg.edge_weight, **sample)
      return loss, (terms["recon"], terms["penalty"], loop.batch_stats_of(model))

    (loss, (recon_loss, pen, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = loop.apply_gradients(state, grads, tx, new_stats)
    return state, {"loss": loss, "recon": recon_loss, "penalty": pen}

  return step


class PenaltySamplePlan:
  """The penalty's class sample of each step, drawn on the host exactly as the in-memory step draws it
  (`sample_class` with the key `fold_in(key(seed), step)`): 'class_index' (n, P) and 'class_valid' (n, P)."""

  def __init__(self, labels: np.ndarray, num_classes: int, cfg: AETrainConfig, padded_size: int):
    self.table, self.counts = class_index_table(labels, num_classes)
    self.cfg, self.padded_size = cfg, padded_size
    cpu = jax.local_devices(backend="cpu")[0]  # this process's own: a draw never spans processes
    with jax.default_device(cpu):
      self.key = jax.random.key(cfg.seed)

    def draw(key, steps, table, counts):
      def one(s):
        _, idx, valid, _ = sample_class(
          jax.random.fold_in(key, s), table, counts, cfg.penalty_sample_size, padded_size, classes=cfg.penalty_classes
        )
        return idx, valid

      return jax.vmap(one)(steps)

    self._draw = jax.jit(draw)
    self._cpu = cpu

  def __call__(self, first: int, n: int) -> dict:
    with jax.default_device(self._cpu):
      steps = jnp.arange(first, first + n, dtype=jnp.int32)
      idx, valid = jax.device_get(self._draw(self.key, steps, self.table, self.counts))
    return {"class_index": np.asarray(idx, np.int32), "class_valid": np.asarray(valid, bool)}


class _WithPenaltySample:
  """A batch plan joined with the penalty sample plan (streamed training)."""

  def __init__(self, plan: loop.EpochPlan, samples: PenaltySamplePlan):
    self.plan, self.samples, self.steps_per_epoch = plan, samples, plan.steps_per_epoch

  def __call__(self, first: int, n: int) -> dict:
    return {**self.plan(first, n), **self.samples(first, n)}


class BatchPlan(loop.EpochPlan):
  """Every image once per epoch, shuffled by (seed, epoch)."""

  def __init__(self, num_images: int, batch_size: int, seed: int):
    super().__init__(num_images, batch_size, seed)
    self.num_images = num_images

  def epoch_order(self, rng):
    return rng.permutation(self.num_images)


@dataclasses.dataclass
class AETrainResult:
  model: Autoencoder  # the final state
  state: loop.TrainState
  summary: dict
  best_model: Autoencoder | None = None  # chosen by validation `select_metric`; the final model without one


def prepare_training(
  model: Autoencoder,
  images_u8: np.ndarray | feed.ImageSource,
  labels: np.ndarray,
  cfg: AETrainConfig,
  *,
  num_classes: int | None = None,
  mesh=None,
) -> loop.Training:
  """Checks the inputs, puts the image set on the mesh (or sets up its stream) and compiles the step
  (shared by `train_autoencoder` and `benchmarks/autoencoder_step.py`).

  `images_u8`: uint8 (N, H, W, C) kept on the devices, or a `feed.ImageSource` read step by step on the
  host (`feed.FedPlan`): the same batches and penalty samples for the same seed, memory flat in N.
  """
  streamed = isinstance(images_u8, feed.ImageSource)
  images_u8 = images_u8 if streamed else np.asarray(images_u8)
  labels = np.asarray(labels, np.int32)
  spec: AutoencoderSpec = model.spec
  _check_images(images_u8, labels, spec)
  cfg.validate()
  if len(images_u8) < 2:
    raise ValueError(f"need at least 2 training images, got {len(images_u8)}")
  cfg = dataclasses.replace(cfg, steps_per_call=loop.steps_per_call_for_backend(cfg.steps_per_call))
  mesh = mesh or mesh_lib.make_mesh()
  mesh_lib.check_batch_divisible(cfg.batch_size, mesh)
  num_classes = int(num_classes if num_classes is not None else labels.max() + 1)
  table, counts = class_index_table(labels, num_classes)
  if cfg.penalty != "none" and not (counts >= 2).any():
    raise ValueError("the penalty needs a class with at least 2 images; none has (set train.penalty='none')")

  tx = optax.adam(cfg.learning_rate)
  graphdef, state = loop.create_state(model, tx)
  num_devices = mesh.devices.size
  step_fn = make_step(graphdef, tx, cfg, num_devices=num_devices)
  plan = BatchPlan(len(images_u8), cfg.batch_size, cfg.seed)
  if streamed:
    images_of = {"index": "image"}
    if cfg.penalty != "none":
      samples = PenaltySamplePlan(labels, num_classes, cfg, mesh_lib.round_up(cfg.penalty_sample_size, num_devices))
      plan, images_of = _WithPenaltySample(plan, samples), {**images_of, "class_index": "class_image"}
    total = cfg.epochs * plan.steps_per_epoch
    plan = feed.FedPlan(plan, images_u8, mesh=mesh, total_steps=total, images_of=images_of)
    data = {"counts": counts}
  else:
    data = mesh_lib.put({"images": images_u8, "class_table": table, "counts": counts}, mesh_lib.replicated(mesh))
  return loop.Training(cfg=cfg, mesh=mesh, graphdef=graphdef, state=state, plan=plan, data=data, step_fn=step_fn)


def train_autoencoder(
  model: Autoencoder,
  images_u8: np.ndarray | feed.ImageSource,
  labels: np.ndarray,
  cfg: AETrainConfig,
  *,
  num_classes: int | None = None,
  val: tuple[np.ndarray, np.ndarray] | None = None,
  mesh=None,
  workdir: str | None = None,
  checkpoint_every_steps: int = 0,
  keep_checkpoints: int = 3,
  resume: bool = False,
  overwrite: bool = False,
  progress: bool = True,
  stop_after_steps: int | None = None,
  metadata: dict | None = None,
) -> AETrainResult:
  """Trains `model` in place on uint8 NHWC images with integer class labels; returns the trained model.

  Data parallel over `mesh` (default: all devices). `images_u8` may be a `feed.ImageSource` (e.g.
  `data.file_images.FileImages`) streamed from the host instead of held on the devices (see `prepare_training`).
  `workdir` enables metrics.jsonl and Orbax checkpoints (every `checkpoint_every_steps`, keeping
  `keep_checkpoints`); `resume` continues from the latest one, which must come from the same model, settings
  and data (`epochs` may grow); `overwrite` discards another run's checkpoints instead of refusing to mix with
  them.

  `val = (images_u8, labels)`: held-out images scored in eval mode at every epoch end (or every
  `cfg.eval_every_steps`) -- PSNR and SSIM per class, logged as `val_*` in metrics.jsonl -- and the best
  state by `cfg.select_metric` returned as `best_model` (its step and scores in the summary). A resumed run
  restores the best state it had at its checkpoint (`<workdir>/best_val.npz`), so it selects as an
  uninterrupted run does.
  """
  if val is not None:  # checked before anything compiles
    val = (loop.as_images(val[0]), np.asarray(val[1], np.int32))
    _check_images(*val, model.spec, what="validation images")
    classes = int(num_classes if num_classes is not None else np.max(labels) + 1)
    if val[1].size and val[1].max() >= classes:
      raise ValueError(f"validation labels reach {val[1].max()}, but training has {classes} classes")
  setup = prepare_training(model, images_u8, labels, cfg, num_classes=num_classes, mesh=mesh)
  cfg, plan, spec = setup.cfg, setup.plan, model.spec
  train_id = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("epochs", "steps_per_call")}
  if not cfg.edge_weight:  # the paper's loss: identified as before the setting, so older checkpoints resume
    del train_id["edge_weight"]
  run_id = {"spec": dataclasses.asdict(model.spec), "train": train_id, "data": feed.fingerprint(images_u8, labels)}
  selection = _selection(setup, val, workdir, run_id) if val is not None else None
  penalty_images = cfg.penalty_sample_size if cfg.penalty != "none" else 0
  state, summary = setup.run(
    metadata={**(metadata or {}), "run": run_id},
    evaluate=selection,
    eval_every_steps=cfg.eval_every_steps,
    workdir=workdir,
    checkpoint_every_steps=checkpoint_every_steps,
    keep_checkpoints=keep_checkpoints,
    resume=resume,
    overwrite=overwrite,
    images_per_step=cfg.batch_size + penalty_images,
    progress=progress,
    description=f"DeepSMOTE {spec.name}",
    stop_after_steps=stop_after_steps,
  )
  summary["epochs"] = cfg.epochs
  summary["steps_per_epoch"] = plan.steps_per_epoch
  trained = loop.merge_model(setup.graphdef, jax.device_get(state.params), jax.device_get(state.batch_stats))
  best_model = trained
  if selection is not None:
    summary.update(selection.summary(summary["final_step"]))
    if selection.variables is not None:
      best_model = loop.merge_model(setup.graphdef, *jax.device_get(selection.variables))
  else:
    summary.update(select_metric="last", best_step=summary["final_step"])
  return AETrainResult(model=trained, state=state, summary=summary, best_model=best_model)


def _selection(setup: loop.Training, val: tuple[np.ndarray, np.ndarray], workdir: str | None, run_id: dict):
  """The validation scorer and best-state keeper of a run (its key: the run's identity and the images)."""
  num_classes = int(setup.data["counts"].shape[0])
  cfg = setup.cfg
  scorer = ReconstructionEval(setup.graphdef, *val, num_classes, setup.mesh, chunk=cfg.batch_size)
  return BestSelection(cfg.select_metric, scorer, workdir, _digest({"run": run_id, "val": feed.fingerprint(*val)}))


def psnr(x: jax.Array, y: jax.Array, *, data_range: float = 1.0) -> jax.Array:
  """Per-image peak signal-to-noise ratio in dB of (N, H, W, C) images in [0, data_range]; inf if equal."""
  err = jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)).reshape(x.shape[0], -1)
  return 10.0 * jnp.log10(data_range**2 / jnp.mean(err, axis=1))


def _valid_filter(n: int, taps: np.ndarray) -> np.ndarray:
  """(n - len(taps) + 1, n) matrix of a 'valid' 1-D correlation with `taps`."""
  offset = np.arange(n)[None, :] - np.arange(n - len(taps) + 1)[:, None]
  inside = (offset >= 0) & (offset < len(taps))
  return np.where(inside, taps[np.clip(offset, 0, len(taps) - 1)], 0.0).astype(np.float32)


def ssim(
  x: jax.Array, y: jax.Array, *, data_range: float = 1.0, window: int = 11, sigma: float = 1.5, k1=0.01, k2=0.03
) -> jax.Array:
  """Per-image structural similarity (Wang et al. 2004) of (N, H, W, C) images in [0, data_range].

  Gaussian-weighted local statistics (window `window`, at most the image size, std `sigma`) over the
  positions where the window fits, per channel; the SSIM map averaged over positions and channels.
  """
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  # Moments of x and y shifted by their image means: (co)variances are unchanged, and float32 loses nothing to
  # the cancellation in E[x^2] - E[x]^2 on flat images (where C2 = 9e-4 makes it visible).
  sx, sy = jnp.mean(x, axis=(1, 2), keepdims=True), jnp.mean(y, axis=(1, 2), keepdims=True)
  x, y = x - sx, y - sy
  h, w = x.shape[1:3]
  size = min(window, h, w)
  taps = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
  fh, fw = _valid_filter(h, taps / taps.sum()), _valid_filter(w, taps / taps.sum())

  def blur(a):
    return jnp.einsum("ih,nhwc,jw->nijc", fh, a, fw, precision=jax.lax.Precision.HIGHEST)

  mx, my = blur(x), blur(y)
  vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
  mx, my = mx + sx, my + sy
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  ssim_map = (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  return jnp.mean(ssim_map, axis=(1, 2, 3))


def to_data_channels(images: jax.Array, channels: int) -> jax.Array:
  """Decoded images brought to the data's channels (as `decode_codes`): the channel mean for grayscale data,
  the one channel repeated for RGB."""
  if images.shape[-1] == channels:
    return images
  if channels == 1:
    return jnp.mean(images, axis=-1, keepdims=True)
  return jnp.repeat(images, channels, axis=-1)


class ReconstructionEval:
  """Eval-mode PSNR / SSIM per class of held-out images, straight from the device train state.

  The images come in whole chunks (`feed.HeldOutImages`: padding labelled -1, counted nowhere; placed on the
  mesh once, or read chunk by chunk when streamed); each call runs one jitted, sharded step per chunk on the
  replicated parameters where they are and brings back only the per-class sums.
  """

  def __init__(self, graphdef, images_u8, labels: np.ndarray, num_classes: int, mesh, chunk: int = 64):
    self.chunks = feed.HeldOutImages(images_u8, mesh, chunk, labels=labels)
    self.counts = np.bincount(np.asarray(labels, np.int32), minlength=num_classes)
    sharding, repl = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)

    def sums(params, stats, x_u8, y):
      m = loop.merge_model(graphdef, params, stats)
      x = to_unit_range(x_u8)
      recon = to_data_channels(m.decoder(m.encoder(x, train=False), train=False).astype(jnp.float32), x.shape[-1])
      a, b = (jnp.clip(recon, -1, 1) + 1) / 2, (x + 1) / 2
      member = jax.nn.one_hot(y, num_classes, dtype=bool)  # label -1 (padding): no class
      per_class = lambda v: jnp.sum(jnp.where(member, v[:, None], 0.0), axis=0)  # noqa: E731
      return per_class(psnr(a, b)), per_class(ssim(a, b))

    self._sums = jax.jit(sums, in_shardings=(repl, repl, sharding, sharding), out_shardings=repl)

  def __call__(self, state: loop.TrainState) -> dict:
    """{'psnr', 'ssim': mean over classes of the per-class mean; 'psnr_per_class', 'ssim_per_class'
    (None for a class without validation images)}."""
    totals = None
    for x, y in self.chunks:
      part = self._sums(state.params, state.batch_stats, x, y)
      totals = part if totals is None else jax.tree.map(jnp.add, totals, part)
    psnr_sum, ssim_sum = (np.asarray(t, np.float64) for t in jax.device_get(totals))
    present = self.counts > 0
    out = {}
    for name, total in (("psnr", psnr_sum), ("ssim", ssim_sum)):
      per_class = np.where(present, total / np.maximum(self.counts, 1), np.nan)
      out[name] = float(np.mean(per_class[present]))
      out[f"{name}_per_class"] = [round(float(v), 5) if p else None for v, p in zip(per_class, present)]
    return out


class BestSelection:
  """The `evaluate` callback of `loop.run`: scores the validation set and keeps the best state on the device.

  With a workdir, each new best is also written to `<workdir>/best_val.npz` (tagged with the run's key), and
  a resumed run takes back the best it had at its checkpoint: the best validation record kept in
  metrics.jsonl (the loop drops the records after the checkpoint) and the state of that step from the file.
  If the file holds a later step, that later best beats every earlier one and the resumed run reaches it
  again, so selection restarts; the same result either way.
  """

  def __init__(self, metric: str, scorer: ReconstructionEval, workdir: str | None, key: str):
    self.metric, self.scorer, self.key = metric, scorer, key
    self.path = pathlib.Path(workdir) / BEST_FILE if workdir else None
    self.score, self.step, self.variables, self.scores = -np.inf, None, None, None
    self.last: dict | None = None
    self.note: str | None = None
    self._started = False

  def __call__(self, step: int, state: loop.TrainState) -> dict:
    if not self._started:
      self._started = True
      self._restore(step, state)
    scores = self.scorer(state)
    self.last = {"step": step, **scores}
    if self.metric == "last":  # scored and logged only; the final state is the one kept
      return scores
    score = scores[self.metric]
    if score > self.score:  # a device-side copy: the state itself is donated to the next call
      self.score, self.step, self.scores = float(score), step, scores
      self.variables = jax.tree.map(jnp.copy, (state.params, state.batch_stats))
      self._save()
    return {**scores, "best_step": self.step}

  def _save(self) -> None:
    if self.path is None or not distributed.is_primary():
      return
    leaves = jax.device_get(jax.tree.leaves(self.variables))
    meta = {"key": self.key, "step": self.step, "score": self.score, "scores": self.scores}
    tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **{f"leaf_{i}": a for i, a in enumerate(leaves)})
    os.replace(tmp, self.path)

  def _restore(self, step: int, state: loop.TrainState) -> None:
    """Takes back the best state of the records before `step` (the first evaluation of this run)."""
    metrics = self.path.with_name("metrics.jsonl") if self.path else None
    if self.metric == "last" or metrics is None or not metrics.is_file():
      return
    column = f"val_{self.metric}"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    earlier = [r for r in records if r.get("step", 0) < step and r.get(column) is not None]
    if not earlier:
      return
    best = max(earlier, key=lambda r: (r[column], -r["step"]))  # ties: the earliest, as `>` above
    meta, leaves = _read_best(self.path)
    if meta is not None and meta.get("key") == self.key and meta.get("step") == best["step"]:
      treedef = jax.tree.structure((state.params, state.batch_stats))
      self.variables = mesh_lib.put(jax.tree.unflatten(treedef, leaves), jax.tree.leaves(state.params)[0].sharding)
      self.score, self.step, self.scores = float(meta["score"]), int(meta["step"]), meta["scores"]
    elif meta is None or meta.get("key") != self.key or int(meta.get("step", -1)) < best["step"]:
      self.note = (
        f"the best state before the resume (step {best['step']}) was not found in {self.path}; "
        f"selection restarted at step {step}"
      )

  def summary(self, final_step: int) -> dict:
    """What was selected: the step and its validation scores (the final step where nothing was selected)."""
    chosen = self.variables is not None
    return {
      "select_metric": self.metric,
      "best_step": self.step if chosen else final_step,
      "best_score": self.score if chosen else None,
      "best_val": self.scores if chosen else (self.last if self.last and self.last["step"] == final_step else None),
      "final_val": self.last,
      **({"selection_note": self.note} if self.note else {}),
    }


def _read_best(path: pathlib.Path) -> tuple[dict | None, list]:
  if not path.is_file():
    return None, []
  try:
    with np.load(path) as z:
      meta = json.loads(str(z["meta"]))
      return meta, [z[f"leaf_{i}"] for i in range(len(z.files) - 1)]
  except (OSError, ValueError, KeyError):
    return None, []


def _digest(value) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_images(images, labels: np.ndarray, spec: AutoencoderSpec, what: str = "images") -> None:
  """Shape and dtype checks of uint8 (N, H, W, C) images (an array or a `feed.ImageSource`) and labels."""
  shape = feed.images_shape(images)
  if len(shape) != 4:
    raise ValueError(f"{what} must be (N, H, W, C), got shape {shape}")
  if not isinstance(images, feed.ImageSource) and images.dtype != np.uint8:
    raise ValueError(f"{what} must be uint8 in [0, 255], got {images.dtype}")
  want = (spec.image_size, spec.image_size, spec.channels)
  if tuple(shape[1:]) != want:
    raise ValueError(
      f"{what} are {tuple(shape[1:])} but the model {spec.name!r} expects {want} (model.image_size / model.channels)"
    )
  if labels.shape != (shape[0],):
    raise ValueError(f"labels of the {what} must have shape ({shape[0]},), got {labels.shape}")
  if labels.size and labels.min() < 0:
    raise ValueError("labels must be non-negative class indices")


def encode_images(model: Autoencoder, images_u8: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
  """Eval-mode codes (N, latent) of uint8 images, in batches (one compiled shape)."""
  graphdef, params, stats = loop.split_model(model)
  params, stats = jax.device_put((params, stats))  # once, not once per batch
  return loop.batched(lambda x: _encode(graphdef, params, stats, x), loop.as_images(images_u8), batch_size)


def decode_codes(
  model: Autoencoder, codes: np.ndarray, *, batch_size: int = 256, channels: int | None = None
) -> np.ndarray:
  """Eval-mode decoded images as uint8 (N, H, W, C).

  `channels` brings them to the data's channels when the decoder's differ (the paper's Fig. 3 decodes 3
  from 1): the mean of the decoded channels for grayscale data, the one channel repeated for RGB.
  """
  graphdef, params, stats = loop.split_model(model)
  params, stats = jax.device_put((params, stats))  # once, not once per batch
  images = loop.batched(lambda z: _decode(graphdef, params, stats, z), np.asarray(codes, np.float32), batch_size)
  if channels is None or images.shape[-1] == channels:
    return images
  if channels == 1:
    return np.rint(images.astype(np.float32).mean(-1, keepdims=True)).astype(np.uint8)
  return np.repeat(images, channels, axis=-1)


SYNTHESES = ("decode", "residual")


def synthesize(
  model: Autoencoder,
  codes: np.ndarray,
  *,
  synthesis: str = "decode",
  base_codes: np.ndarray | None = None,
  base_images: np.ndarray | None = None,
  batch_size: int = 256,
  channels: int | None = None,
) -> np.ndarray:
  """Synthetic uint8 images (N, H, W, C) of new codes.

  'decode' (the paper): the decoded code, `decode_codes`. 'residual': the real base image each code was
  interpolated from plus the decoded change, base + D(code) - D(base code), clipped. What the decoder cannot
  reproduce -- a 1-pixel crack, the surface texture -- stays as it is in the real base image, and the
  interpolation moves only what the decoder can represent (shading, shape, position of large structure); at
  SMOTE gap 0 the result is the base image itself. `base_codes` / `base_images`: the base row of every code
  (e.g. `smote.Resampled.base` into the encoded images), needed for 'residual' only.
  """
  if synthesis == "decode":
    return decode_codes(model, codes, batch_size=batch_size, channels=channels)
  if synthesis != "residual":
    raise ValueError(f"synthesis={synthesis!r}: choose one of {SYNTHESES}")
  codes = np.asarray(codes, np.float32)
  if base_codes is None or base_images is None:
    raise ValueError("synthesis='residual' needs the base code and the base image of every new code")
  base_codes, base_images = np.asarray(base_codes, np.float32), np.asarray(base_images)
  if not len(codes) == len(base_codes) == len(base_images):
    raise ValueError(f"{len(codes)} codes but {len(base_codes)} base codes and {len(base_images)} base images")
  graphdef, params, stats = loop.split_model(model)
  params, stats = jax.device_put((params, stats))
  rows = np.arange(len(codes))
  return loop.batched(
    lambda r: _decode_residual(graphdef, params, stats, codes[r], base_codes[r], base_images[r]), rows, batch_size
  )


# Module-level jits keyed on the (hashable) graphdef: repeated calls reuse one compilation.
@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, params, stats, x):
  return loop.merge_model(graphdef, params, stats).encoder(to_unit_range(x), train=False)


@functools.partial(jax.jit, static_argnums=0)
def _decode(graphdef, params, stats, z):
  return to_uint8(loop.merge_model(graphdef, params, stats).decoder(z, train=False))


@functools.partial(jax.jit, static_argnums=0)
def _decode_residual(graphdef, params, stats, z, z_base, base_u8):
  decoded = loop.merge_model(graphdef, params, stats).decoder(jnp.concatenate([z, z_base]), train=False)
  change = decoded[: len(z)] - decoded[len(z) :]  # eval mode: each row decoded on its own
  return to_uint8(to_unit_range(base_u8) + to_data_channels(change, base_u8.shape[-1]))
