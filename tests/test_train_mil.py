"""Multiple-instance training: top-k pooling, padding never used, the step trains each bag's top tile, the plan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from deepsmote_jax.data import tiles
from deepsmote_jax.models.classifiers import build_classifier
from deepsmote_jax.train import classifier, loop, mil
from deepsmote_jax.train.classifier import ClassifierTrainConfig


def test_topk_pool_masks_padding_and_sends_gradient_to_the_top_k_only():
  scores = jnp.array([[0.1, 3.0, -1.0, 9.0], [2.0, 5.0, 7.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
  valid = jnp.array([[True, True, True, False], [True, True, True, True], [True, False, False, False]])
  np.testing.assert_allclose(mil.topk_pool(scores, valid, 1), [3.0, 7.0, 4.0])  # 9.0 is padding
  np.testing.assert_allclose(mil.topk_pool(scores, valid, 2), [1.55, 6.0, 4.0])  # a 1-tile bag: its tile
  grad = jax.grad(lambda s: mil.topk_pool(s, valid, 2).sum())(scores)
  np.testing.assert_allclose(grad, [[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0], [1, 0, 0, 0]])
  pos, keep = mil.select_topk(scores, valid, 9)  # k above the width: all valid tiles
  assert pos.shape == (3, 4) and keep.sum(1).tolist() == [3, 4, 1]


def test_ng_logit_is_the_log_odds_of_the_positive_class():
  logits = jnp.array([[0.3, -1.2, 2.0], [1.0, 1.0, 1.0]])
  p = jax.nn.softmax(logits)[:, 1]
  np.testing.assert_allclose(mil.ng_logit(logits, 1), np.log(p / (1 - p)), rtol=1e-5)


def _batch(bag, valid, singles):
  return {
    "bag_index": jnp.array([bag], jnp.int32),
    "bag_valid": jnp.array([valid]),
    "bag_label": jnp.array([1], jnp.int32),
    "bag_mask": jnp.array([True]),
    "tile_index": jnp.array(singles, jnp.int32),
    "tile_label": jnp.zeros(len(singles), jnp.int32),
    "tile_mask": jnp.ones(len(singles), bool),
  }


def test_step_trains_the_bags_top_tile_and_ignores_padding():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 8, 8, 1)).astype(np.uint8)
  model = build_classifier("small_cnn", 2, in_channels=1, image_size=8)  # the default width: a cached init
  cfg = ClassifierTrainConfig(flip_lr=False, flip_ud=False, max_shift=0, compute_dtype="float32")
  tx = classifier.make_optimizer(cfg)
  graphdef, state = loop.create_state(model, tx)
  data = {"tiles": jnp.asarray(images), "class_weights": jnp.ones(2)}
  step = jax.jit(mil.make_mil_step(graphdef, tx, cfg, 1, positive=1, top_k=1))
  x = classifier.to_model_input(jnp.asarray(images[:3]), 1)
  score = jax.jit(lambda p, s: mil.ng_logit(loop.merge_model(graphdef, p, s)(x, train=True), 1))  # as the step
  order = [int(i) for i in jnp.argsort(score(state.params, state.batch_stats))]  # the top tile last
  top = order[-1]
  key = jax.random.key(0)
  bag, _ = step(state, _batch(order, [True, True, True], [3, 4]), key, data)
  alone, _ = step(state, _batch([top, 5, 5], [True, False, False], [3, 4]), key, data)
  other, _ = step(state, _batch([top, 0, 1], [True, False, False], [3, 4]), key, data)
  for a, b, c in zip(jax.tree.leaves(bag.params), jax.tree.leaves(alone.params), jax.tree.leaves(other.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # the bag trains exactly its top tile
    np.testing.assert_allclose(b, c, rtol=1e-6, atol=1e-7)  # whatever the padded slots point at
  masked = _batch([0, 1, 2], [True, True, True], [3, 4]) | {"bag_mask": jnp.array([False])}
  s1, m1 = step(state, masked, key, data)
  s2, m2 = step(state, masked | {"bag_label": jnp.array([0], jnp.int32)}, key, data)
  assert float(m1["loss"]) == float(m2["loss"])  # a masked bag carries no loss, whatever its label
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_array_equal(a, b)


def test_plan_draws_every_bag_once_per_epoch_in_static_shapes():
  bags = tiles.Bags.from_lists([[i] for i in range(20)] + [[20, 21, 22], [23, 24]], [0] * 18 + [1] * 2 + [1, 1])
  plan = mil.MILBatchPlan(bags.index, bags.valid, bags.label, batch_size=8, seed=0, oversampling="none")
  assert plan.steps_per_epoch == 3 and plan.slots == [1, 7] and plan.width == 3
  b = plan(0, plan.steps_per_epoch)
  assert b["bag_index"].shape == (3, 1, 3) and b["tile_index"].shape == (3, 7)
  assert sorted(b["tile_index"][b["tile_mask"]].tolist()) == list(range(20))
  assert sorted(b["bag_index"][b["bag_mask"]][:, 0].tolist()) == [20, 23]
  assert not b["bag_valid"][~b["bag_mask"]].any()
  again = plan(2, 3)  # across an epoch boundary: same shapes, a function of the step only
  np.testing.assert_array_equal(again["tile_index"][0], b["tile_index"][2])
  over = mil.MILBatchPlan(bags.index, bags.valid, bags.label, batch_size=8, seed=0, oversampling="random")
  ob = over(0, over.steps_per_epoch)
  labels = np.concatenate([ob["bag_label"][ob["bag_mask"]], ob["tile_label"][ob["tile_mask"]]])
  assert (labels == 0).sum() == 18 and abs((labels == 1).sum() - 18) <= 1
