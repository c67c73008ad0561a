"""Multiple-instance training of a tile classifier from image-level labels (top-k tile pooling).

A bag is a set of tiles known to hold at least one NG tile (an NG image without a mask) or none at all (a
one-tile OK bag, an NG instance, a synthetic NG tile: bags of one). A bag's NG logit is the mean of its k
highest tile NG logits (log-odds of NG against the other classes), and the loss is the cross-entropy of
that logit against the bag's label, as in top-k MIL (Campanella et al., Nature Medicine 2019). Bags are
padded to one width with a validity mask, so every shape is static.

Each step is a pure function of the explicit `loop.TrainState`: the tiles of its multi-tile bags are scored
without gradient, each bag's top-k tiles are picked (padding never), and only those tiles and the one-tile
bags go through the forward and backward pass. The gradient is the one of top-k pooling over the whole bag
(non-selected tiles get none), at the cost of a forward pass over the bag instead of a backward pass.
Tiles are ranked with train-mode BatchNorm (the statistics of the bag tiles themselves), as the gradient
pass computes them: the running averages lag behind and mean nothing at the start, and ranking with them
locked training onto a background tile in 4 of 7 seeds of the synthetic crack test (1 of 7 in train mode).
As in the default classifier's padded last batch, masked slots still pass through BatchNorm's batch
statistics but carry no loss. Batches carry two fixed-size groups: `bag_*` (multi-tile bags, B_b x T) and
`tile_*` (one-tile bags, B_s).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deepsmote_jax.train import classifier, loop
from deepsmote_jax.train import mesh as mesh_lib
from deepsmote_jax.train.classifier import ClassifierResult, ClassifierTrainConfig


def ng_logit(logits: jax.Array, positive: int) -> jax.Array:
  """Log-odds of the positive (NG) class against all others: logit_NG - logsumexp(other logits)."""
  logits = logits.astype(jnp.float32)
  others = jnp.concatenate([logits[..., :positive], logits[..., positive + 1 :]], axis=-1)
  return logits[..., positive] - jax.nn.logsumexp(others, axis=-1)


def select_topk(scores: jax.Array, valid: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """(positions (B, k) of each bag's k highest valid scores, keep (B, k)): `keep` is False past a bag's
  number of valid tiles, so padding is never used."""
  k = min(k, scores.shape[-1])
  _, pos = jax.lax.top_k(jnp.where(valid, scores, -jnp.inf), k)
  keep = jnp.arange(k)[None, :] < jnp.minimum(valid.sum(-1), k)[:, None]
  return pos, keep


def topk_pool(scores: jax.Array, valid: jax.Array, k: int) -> jax.Array:
  """(B,) mean of each bag's k highest valid scores (of all valid ones when fewer than k; 0 for none)."""
  pos, keep = select_topk(scores, valid, k)
  top = jnp.take_along_axis(scores, pos, axis=-1)
  return jnp.sum(jnp.where(keep, top, 0.0), -1) / jnp.maximum(keep.sum(-1), 1)


def _logits(out):
  return out[0] if isinstance(out, tuple) else out


def make_mil_step(graphdef, tx, cfg: ClassifierTrainConfig, in_channels: int, *, positive: int, top_k: int):
  """Pure step `(state, batch, key, data) -> (state, metrics)`; `data` holds the uint8 'tiles' and the
  per-class 'class_weights'."""

  def tiles(data, index):
    return classifier.to_model_input(data["tiles"][index], in_channels)

  def choose(state, batch, data):
    """Tile indices (B_b, k) of each multi-tile bag's top-k tiles by the current model, and their mask; a
    step without a bag skips the scoring pass."""
    idx, valid = batch["bag_index"], batch["bag_valid"] & batch["bag_mask"][:, None]
    b, t = idx.shape
    k = min(top_k, t)

    def score():
      model = loop.merge_model(graphdef, state.params, state.batch_stats)
      z = ng_logit(_logits(model(tiles(data, idx.reshape(-1)), train=True)), positive)  # batch statistics
      return jax.lax.stop_gradient(z.reshape(b, t))

    z = jax.lax.cond(jnp.any(valid), score, lambda: jnp.zeros((b, t), jnp.float32))
    pos, keep = select_topk(z, valid, k)
    return jnp.take_along_axis(idx, pos, axis=-1), keep

  def step(state: loop.TrainState, batch, key, data):
    k_aug, k_drop = jax.random.split(jax.random.fold_in(key, state.step))
    chosen, keep = choose(state, batch, data)
    nb, k = chosen.shape
    x = classifier.augment(
      k_aug,
      tiles(data, jnp.concatenate([chosen.reshape(-1), batch["tile_index"]])),
      flip_lr=cfg.flip_lr,
      flip_ud=cfg.flip_ud,
      max_shift=cfg.max_shift,
    )
    labels = jnp.concatenate([batch["bag_label"], batch["tile_label"]])
    y = (labels == positive).astype(jnp.float32)
    mask = jnp.concatenate([batch["bag_mask"], batch["tile_mask"]]).astype(jnp.float32)
    w = data["class_weights"][labels] * mask

    def bag_logits(z):
      pooled = topk_pool(z[: nb * k].reshape(nb, k), keep, k)
      return jnp.concatenate([pooled, z[nb * k :]])

    def loss_fn(params):
      model = loop.merge_model(graphdef, params, state.batch_stats)
      classifier._reseed_dropout(model, k_drop)  # the classifier's own rule: reproducible, resumable
      out = model(x, train=True)
      z = bag_logits(ng_logit(_logits(out), positive))
      ce = optax.sigmoid_binary_cross_entropy(z, y)
      loss = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1e-6)
      if isinstance(out, tuple) and out[1] is not None:  # InceptionV3's auxiliary head, pooled alike
        ce_aux = optax.sigmoid_binary_cross_entropy(bag_logits(ng_logit(out[1], positive)), y)
        loss = loss + cfg.aux_weight * jnp.sum(ce_aux * w) / jnp.maximum(jnp.sum(w), 1e-6)
      acc = jnp.sum(((z > 0) == (y > 0)) * mask) / jnp.maximum(jnp.sum(mask), 1)
      return loss, (acc, loop.batch_stats_of(model))

    (loss, (acc, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loop.apply_gradients(state, grads, tx, stats), {"loss": loss, "train_acc": acc}

  return step


class MILBatchPlan:
  """Batches of bags as a pure function of (seed, step), like `loop.EpochPlan`.

  An epoch holds every bag once (with random oversampling, each class drawn up to the largest class's
  count, within its multi-tile and one-tile bags alike). It has ceil(bags / batch_size) steps; each step
  carries a fixed share of the multi-tile bags (B_b slots) and of the one-tile bags (B_s slots), spread
  evenly over the epoch; unused slots are masked.
  """

  def __init__(self, index, valid, labels, batch_size: int, seed: int, oversampling: str, devices: int = 1):
    self.index, self.valid = np.asarray(index, np.int32), np.asarray(valid, bool)
    self.labels, self.seed, self.oversampling = np.asarray(labels, np.int32), seed, oversampling
    multi = self.valid.sum(1) > 1
    self.groups = (np.flatnonzero(multi), np.flatnonzero(~multi))
    self.first = self.index[np.arange(len(self.index)), self.valid.argmax(1)]  # a one-tile bag's tile
    self.draws = self._draws()
    per_epoch = [sum(n for _, n in d) for d in self.draws]
    self.steps_per_epoch = max(1, -(-sum(per_epoch) // batch_size))
    self.slots = [mesh_lib.round_up(max(1, -(-n // self.steps_per_epoch)), devices) for n in per_epoch]
    last = self.valid.shape[1] - self.valid[:, ::-1].argmax(1)  # one past each bag's last valid slot
    self.width = int(last[self.groups[0]].max()) if len(self.groups[0]) else 1
    self._cache: dict[int, tuple] = {}

  def _draws(self) -> list[list[tuple[np.ndarray, int]]]:
    """Per group: (members of one class, how many draws per epoch)."""
    counts = np.bincount(self.labels)
    target = counts.max()
    out = []
    for g in self.groups:
      parts = []
      for c in np.unique(self.labels[g]):
        members = g[self.labels[g] == c]
        n = len(members) if self.oversampling != "random" else int(round(len(members) * target / counts[c]))
        parts.append((members, n))
      out.append(parts)
    return out

  def _layout(self, rng, group: int) -> np.ndarray:
    """(steps_per_epoch, slots) bag ids of one group for an epoch (-1: empty slot)."""
    picks = [np.concatenate([m, rng.choice(m, n - len(m))]) if n > len(m) else m for m, n in self.draws[group]]
    order = rng.permutation(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
    out = np.full((self.steps_per_epoch, self.slots[group]), -1, np.int64)
    fill = np.zeros(self.steps_per_epoch, np.int64)
    for j, bag in enumerate(order):
      s = j * self.steps_per_epoch // len(order)
      out[s, fill[s]], fill[s] = bag, fill[s] + 1
    return out

  def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
    if e not in self._cache:
      rng = np.random.default_rng([self.seed, e])
      self._cache = {e: (self._layout(rng, 0), self._layout(rng, 1))}
    return self._cache[e]

  def __call__(self, first: int, n: int) -> dict:
    rows = [self.epoch(e) for e in range(first // self.steps_per_epoch, (first + n - 1) // self.steps_per_epoch + 1)]
    bags = np.concatenate([r[0] for r in rows])[first % self.steps_per_epoch :][:n]
    ones = np.concatenate([r[1] for r in rows])[first % self.steps_per_epoch :][:n]
    b, s = np.maximum(bags, 0), np.maximum(ones, 0)
    return {
      "bag_index": self.index[b][..., : self.width],
      "bag_valid": self.valid[b][..., : self.width] & (bags >= 0)[..., None],
      "bag_label": self.labels[b],
      "bag_mask": bags >= 0,
      "tile_index": self.first[s],
      "tile_label": self.labels[s],
      "tile_mask": ones >= 0,
    }


def prepare_mil(
  model, tiles_u8, bag_index, bag_valid, bag_labels, cfg: ClassifierTrainConfig, *, num_classes, positive, top_k, mesh
) -> classifier.ClassifierTraining:
  """Checks the inputs, places the tiles and compiles the MIL step (the classifier's optimizer and weights)."""
  cfg.validate()
  cfg = dataclasses.replace(cfg, steps_per_call=loop.steps_per_call_for_backend(cfg.steps_per_call))
  tiles_u8, labels = np.asarray(tiles_u8), np.asarray(bag_labels, np.int32)
  if tiles_u8.ndim != 4 or tiles_u8.dtype != np.uint8:
    raise ValueError(f"tiles must be uint8 (N, H, W, C), got {tiles_u8.dtype} {tiles_u8.shape}")
  if not len(labels) or not np.asarray(bag_valid).any(1).all():
    raise ValueError("every bag needs at least one tile")
  in_channels = int(getattr(model, "in_channels", tiles_u8.shape[-1]))
  mesh = mesh or mesh_lib.make_mesh()
  plan = MILBatchPlan(bag_index, bag_valid, labels, cfg.batch_size, cfg.seed, cfg.oversampling, mesh.devices.size)
  weights = classifier.class_weights(labels, num_classes, cfg.class_weighting)
  return classifier.classifier_training(
    model,
    cfg,
    functools.partial(make_mil_step, positive=positive, top_k=top_k),
    mesh=mesh,
    plan=plan,
    data={"tiles": tiles_u8, "class_weights": weights},
    in_channels=in_channels,
  )


def train_mil(
  model,
  tiles_u8: np.ndarray,
  bag_index: np.ndarray,
  bag_valid: np.ndarray,
  bag_labels: np.ndarray,
  cfg: ClassifierTrainConfig,
  *,
  num_classes: int,
  positive: int,
  top_k: int = 1,
  val_tiles: np.ndarray | None = None,
  val_images: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
  workdir: str | None = None,
  progress: bool = True,
  mesh=None,
) -> ClassifierResult:
  """Trains a tile classifier on bags of `tiles_u8` (uint8 N,H,W,C). With `val_tiles`, each epoch scores
  them and `val_images(tile probabilities (n, C)) -> (labels, probabilities)` of the validation images (e.g.
  tiles aggregated per image) feed `classifier.EpochSelector`, which keeps the best epoch. Class weights
  ('balanced') and random oversampling count bags."""
  setup = prepare_mil(
    model,
    tiles_u8,
    bag_index,
    bag_valid,
    bag_labels,
    cfg,
    num_classes=num_classes,
    positive=positive,
    top_k=top_k,
    mesh=mesh,
  )
  cfg, plan, graphdef = setup.cfg, setup.plan, setup.graphdef
  keeper = None
  if val_tiles is not None:
    val_probs = classifier.ValidationEval(graphdef, setup.in_channels, val_tiles, setup.mesh)
    keeper = classifier.BestEpoch(
      classifier.EpochSelector(cfg.select_metric, positive), lambda st: val_images(val_probs(st))
    )
  run_id = {
    "train": dataclasses.asdict(cfg),
    "top_k": top_k,
    "data": loop.fingerprint(np.asarray(tiles_u8), np.asarray(bag_index)),
  }
  state, summary = setup.run(
    metadata={"run": run_id},
    evaluate=keeper,
    workdir=workdir,
    images_per_step=cfg.batch_size,
    progress=progress,
    description="tile classifier (MIL)",
  )
  final, best_model = classifier.BestEpoch.models(keeper, graphdef, state)
  summary.update(
    classifier.BestEpoch.summary(keeper),
    select_metric=cfg.select_metric,
    steps_per_epoch=plan.steps_per_epoch,
    bag_slots=plan.slots[0],
    tile_slots=plan.slots[1],
    bag_width=plan.width,
  )
  return ClassifierResult(model=final, best_model=best_model, summary=summary)
