"""DeepSMOTE encoder/decoder training: loss, penalty variants, the jitted step and the training entry point.

Loss = reconstruction MSE over a batch + `penalty_weight` * penalty, where the penalty is computed on a
sample of one class drawn inside the jitted step (no host round trip, static shapes):

* `reference` -- as the released DeepSMOTE code: one class drawn uniformly, up to `penalty_sample_size` of
  its images (without replacement), encoded in train mode with the encoder output treated as a constant
  (`stop_gradient`), the same cyclic shift (j -> j+1) applied to codes and target images, decoded and
  compared. No gradient reaches the encoder through this term.
* `paper` -- Algorithm 1 of the DeepSMOTE paper: the codes of the class sample (gradient flowing into the
  encoder) are permuted (a random cyclic shift by 1..n-1, so no code keeps its place), decoded, and
  compared with the sample in its original order.
* `none` -- reconstruction only.

The image set lives on the device as uint8 (4x less memory than float32) together with a per-class index
table; batches are index arrays. A class sample smaller than the static sample size is masked: the masked
rows count neither in the MSE nor in the BatchNorm statistics.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deepsmote_jax.models.autoencoder import Autoencoder
from deepsmote_jax.models.pixels import to_uint8, to_unit_range
from deepsmote_jax.models.presets import AutoencoderSpec
from deepsmote_jax.train import loop
from deepsmote_jax.train import mesh as mesh_lib

PENALTIES = ("reference", "paper", "none")


@dataclasses.dataclass(frozen=True)
class AETrainConfig:
  """Hyper-parameters of a DeepSMOTE encoder/decoder run (defaults: the released code's)."""

  epochs: int = 50
  batch_size: int = 100
  learning_rate: float = 2e-4
  penalty: str = "reference"
  penalty_weight: float = 1.0
  penalty_sample_size: int = 100
  steps_per_call: int = 10
  compute_dtype: str = "auto"
  seed: int = 0

  def validate(self) -> None:
    """Raises ValueError for a bad setting; each message starts with the field's name."""
    if self.penalty not in PENALTIES:
      raise ValueError(f"penalty={self.penalty!r}: choose one of {PENALTIES}")
    for name in ("epochs", "batch_size", "penalty_sample_size", "steps_per_call"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("learning_rate", "penalty_weight"):
      if not float(getattr(self, name)) > 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


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


def sample_class(
  key: jax.Array, class_table: jax.Array, counts: jax.Array, sample_size: int, padded_size: int | None = None
):
  """Draws a class uniformly among those with >= 2 images and up to `sample_size` of its images.

  Returns (class, indices (padded_size,), valid mask, number valid). Static shapes: the sample is padded
  to `padded_size` (>= sample_size, e.g. a multiple of the device count) and masked.
  """
  padded_size = sample_size if padded_size is None else padded_size
  k_class, k_order = jax.random.split(key)
  eligible = counts >= 2
  logits = jnp.where(eligible, 0.0, -jnp.inf)
  c = jax.random.categorical(k_class, logits)
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
):
  """Reconstruction MSE + penalty_weight * penalty on a class sample; returns (loss, {'recon', 'penalty'}).

  Runs the model in train mode (BatchNorm batch statistics, updated in place on `model`). `perm` is the
  permutation of the class sample (a cyclic shift, see `cyclic_shift`); `valid` masks its padding.
  """
  z = model.encoder(images, train=True, mask=mask)
  recon = model.decoder(z, train=True, mask=mask)
  recon_loss = masked_mse(recon, images, mask)
  pen = jnp.zeros((), jnp.float32)
  if penalty == "reference":
    # Released code: codes detached; codes and targets shifted alike.
    codes = jax.lax.stop_gradient(model.encoder(class_images, train=True, mask=valid))
    decoded = model.decoder(codes[perm], train=True, mask=valid[perm])
    pen = masked_mse(decoded, class_images[perm], valid[perm])
  elif penalty == "paper":
    # Algorithm 1: permuted codes decoded and compared with the sample in its original order.
    codes = model.encoder(class_images, train=True, mask=valid)
    decoded = model.decoder(codes[perm], train=True, mask=valid)
    pen = masked_mse(decoded, class_images, valid)
  elif penalty != "none":
    raise ValueError(f"unknown penalty {penalty!r}; choose one of {PENALTIES}")
  return recon_loss + penalty_weight * pen, {"recon": recon_loss, "penalty": pen}


def make_step(graphdef, tx: optax.GradientTransformation, cfg: AETrainConfig, num_devices: int = 1):
  """The pure train step `(state, batch, key, data) -> (state, metrics)`.

  `batch = {'index': (B,) int32, 'mask': (B,) bool}`; `data = {'images': uint8 (N,H,W,C),
  'class_table': (C, M) int32, 'counts': (C,) int32}` (device-resident, replicated). The class sample is
  padded to a multiple of `num_devices` (masked), so the result does not depend on the device count.
  """
  penalty = cfg.penalty
  p_size = cfg.penalty_sample_size
  p_padded = mesh_lib.round_up(p_size, num_devices)

  def step(state: loop.TrainState, batch, key, data):
    step_key = jax.random.fold_in(key, state.step)
    images = to_unit_range(data["images"][batch["index"]])
    bmask = batch["mask"]

    if penalty != "none":
      _, idx, valid, n_valid = sample_class(step_key, data["class_table"], data["counts"], p_size, p_padded)
      class_images = to_unit_range(data["images"][idx])
      if penalty == "reference":
        perm = cyclic_shift(n_valid, p_padded, 1)
      else:
        offset = jax.random.randint(jax.random.fold_in(step_key, 1), (), 1, jnp.maximum(n_valid, 2))
        perm = cyclic_shift(n_valid, p_padded, offset)

    def loss_fn(params):
      model: Autoencoder = loop.merge_model(graphdef, params, state.batch_stats)
      if penalty == "none":
        loss, terms = deepsmote_loss(model, images, bmask, penalty="none")
      else:
        loss, terms = deepsmote_loss(
          model,
          images,
          bmask,
          penalty=penalty,
          class_images=class_images,
          valid=valid,
          perm=perm,
          penalty_weight=cfg.penalty_weight,
        )
      return loss, (terms["recon"], terms["penalty"], loop.batch_stats_of(model))

    (loss, (recon_loss, pen, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = loop.apply_gradients(state, grads, tx, new_stats)
    return state, {"loss": loss, "recon": recon_loss, "penalty": pen}

  return step


class BatchPlan(loop.EpochPlan):
  """Every image once per epoch, shuffled by (seed, epoch)."""

  def __init__(self, num_images: int, batch_size: int, seed: int):
    super().__init__(num_images, batch_size, seed)
    self.num_images = num_images

  def epoch_order(self, rng):
    return rng.permutation(self.num_images)


@dataclasses.dataclass
class AETrainResult:
  model: Autoencoder
  state: loop.TrainState
  summary: dict


@dataclasses.dataclass
class AETraining:
  """Everything a run needs, built once: the compiled multi-step call, its initial state and inputs."""

  cfg: AETrainConfig
  mesh: Any
  graphdef: Any
  state: loop.TrainState
  compiled: Any
  plan: BatchPlan
  data: dict
  total_steps: int


def prepare_training(
  model: Autoencoder,
  images_u8: np.ndarray,
  labels: np.ndarray,
  cfg: AETrainConfig,
  *,
  num_classes: int | None = None,
  mesh=None,
) -> AETraining:
  """Checks the inputs, puts the image set on the mesh and compiles the step (shared by
  `train_autoencoder` and `benchmarks/autoencoder_step.py`)."""
  images_u8 = np.asarray(images_u8)
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
  step_fn = make_step(graphdef, tx, cfg, num_devices=mesh.devices.size)
  plan = BatchPlan(len(images_u8), cfg.batch_size, cfg.seed)
  total_steps = cfg.epochs * plan.steps_per_epoch
  data = jax.device_put({"images": images_u8, "class_table": table, "counts": counts}, mesh_lib.replicated(mesh))
  example = plan(0, min(cfg.steps_per_call, total_steps))
  compiled = loop.compile_steps(step_fn, mesh=mesh, state=state, batch_example=example, data=data)
  return AETraining(
    cfg=cfg, mesh=mesh, graphdef=graphdef, state=state, compiled=compiled, plan=plan, data=data, total_steps=total_steps
  )


def train_autoencoder(
  model: Autoencoder,
  images_u8: np.ndarray,
  labels: np.ndarray,
  cfg: AETrainConfig,
  *,
  num_classes: int | None = None,
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

  Data parallel over `mesh` (default: all devices). `workdir` enables metrics.jsonl and Orbax checkpoints
  (every `checkpoint_every_steps`, keeping `keep_checkpoints`); `resume` continues from the latest one,
  which must come from the same model, settings and data (`epochs` may grow); `overwrite` discards
  another run's checkpoints instead of refusing to mix with them.
  """
  setup = prepare_training(model, images_u8, labels, cfg, num_classes=num_classes, mesh=mesh)
  run_id = {
    "spec": dataclasses.asdict(model.spec),
    "train": {k: v for k, v in dataclasses.asdict(setup.cfg).items() if k not in ("epochs", "steps_per_call")},
    "data": loop.fingerprint(np.asarray(images_u8), np.asarray(labels, np.int32)),
  }
  metadata = {**(metadata or {}), "run": run_id}
  cfg, plan, spec = setup.cfg, setup.plan, model.spec
  penalty_images = cfg.penalty_sample_size if cfg.penalty != "none" else 0
  options = loop.RunOptions(
    total_steps=setup.total_steps,
    steps_per_call=cfg.steps_per_call,
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
  state, summary = loop.run(
    setup.state,
    compiled=setup.compiled,
    get_batches=plan,
    key=jax.random.key(cfg.seed),
    data=setup.data,
    mesh=setup.mesh,
    options=options,
    metadata=metadata,
  )
  summary["epochs"] = cfg.epochs
  summary["steps_per_epoch"] = plan.steps_per_epoch
  trained = loop.merge_model(setup.graphdef, jax.device_get(state.params), jax.device_get(state.batch_stats))
  return AETrainResult(model=trained, state=state, summary=summary)


def _check_images(images: np.ndarray, labels: np.ndarray, spec: AutoencoderSpec) -> None:
  if images.ndim != 4:
    raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
  if images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 in [0, 255], got {images.dtype}")
  want = (spec.image_size, spec.image_size, spec.channels)
  if images.shape[1:] != want:
    raise ValueError(
      f"images are {images.shape[1:]} but the model {spec.name!r} expects {want} (model.image_size / model.channels)"
    )
  if labels.shape != (images.shape[0],):
    raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
  if labels.size and labels.min() < 0:
    raise ValueError("labels must be non-negative class indices")


def encode_images(model: Autoencoder, images_u8: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
  """Eval-mode codes (N, latent) of uint8 images, in batches (one compiled shape)."""
  graphdef, params, stats = loop.split_model(model)
  params, stats = jax.device_put((params, stats))  # once, not once per batch
  return loop.batched(lambda x: _encode(graphdef, params, stats, x), np.asarray(images_u8), batch_size)


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


# Module-level jits keyed on the (hashable) graphdef: repeated calls reuse one compilation.
@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, params, stats, x):
  return loop.merge_model(graphdef, params, stats).encoder(to_unit_range(x), train=False)


@functools.partial(jax.jit, static_argnums=0)
def _decode(graphdef, params, stats, z):
  return to_uint8(loop.merge_model(graphdef, params, stats).decoder(z, train=False))
