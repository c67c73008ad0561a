"""DeepSMOTE training: penalty variants, class sampling, loss falls on real images, resume, determinism."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepsmote_jax import config_lib
from deepsmote_jax.data.folder import load_image_folder
from deepsmote_jax.models.autoencoder import build_autoencoder
from deepsmote_jax.models.presets import AutoencoderSpec, ConvSpec
from deepsmote_jax.train import autoencoder as ae
from deepsmote_jax.train import loop

# A 16x16 model: the same code path as the paper presets, compiled in seconds.
MICRO = AutoencoderSpec(
  name="micro_16",
  image_size=16,
  channels=1,
  latent_dim=8,
  encoder=(ConvSpec(4, 4, 2, 1), ConvSpec(8, 4, 2, 1)),
  decoder_input=(4, 4, 8),
  decoder=(ConvSpec(4, 4, 2, 1), ConvSpec(1, 4, 2, 1)),
)


def _images(n=24, size=16, channels=1, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (3, size, size, channels))
  labels = np.arange(n) % 3
  noise = rng.integers(-20, 21, (n, size, size, channels))
  return np.clip(base[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.int32)


def _penalty_grads(penalty):
  model = build_autoencoder(MICRO, seed=0)
  x = jax.random.uniform(jax.random.key(1), (6, 16, 16, 1), minval=-1, maxval=1)
  xc = jax.random.uniform(jax.random.key(2), (5, 16, 16, 1), minval=-1, maxval=1)
  valid = jnp.array([True, True, True, True, False])
  perm = ae.cyclic_shift(jnp.int32(4), 5, 1)
  graphdef, params, stats = loop.split_model(model)

  def penalty_only(params):
    m = loop.merge_model(graphdef, params, stats)
    loss, terms = ae.deepsmote_loss(m, x, penalty=penalty, class_images=xc, valid=valid, perm=perm, penalty_weight=2.5)
    return terms["penalty"], (loss, terms)

  grads, (loss, terms) = jax.grad(penalty_only, has_aux=True)(params)
  # penalty_weight scales the penalty in the total loss
  assert float(terms["penalty"]) > 0
  assert float(loss) == pytest.approx(float(terms["recon"]) + 2.5 * float(terms["penalty"]), rel=1e-6)
  return grads


def _norm(tree):
  return float(sum(jnp.sum(jnp.abs(v)) for v in jax.tree.leaves(tree)))


def test_reference_penalty_sends_no_gradient_to_encoder():
  grads = _penalty_grads("reference")
  assert _norm(grads["encoder"]) == 0.0
  assert _norm(grads["decoder"]) > 0.0


def test_paper_penalty_trains_encoder_and_decoder():
  grads = _penalty_grads("paper")
  assert _norm(grads["encoder"]) > 0.0 and _norm(grads["decoder"]) > 0.0


def test_penalty_none_is_reconstruction_only():
  model = build_autoencoder(MICRO, seed=0)
  x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 1), minval=-1, maxval=1)
  loss, terms = ae.deepsmote_loss(model, x, penalty="none")
  assert float(terms["penalty"]) == 0.0 and float(loss) == pytest.approx(float(terms["recon"]))


def test_reference_shift_is_a_reconstruction_of_the_class_sample():
  """Shifting codes and targets alike leaves the class sample's reconstruction error unchanged."""
  model = build_autoencoder(MICRO, seed=0)
  xc = jax.random.uniform(jax.random.key(2), (5, 16, 16, 1), minval=-1, maxval=1)
  valid = jnp.ones(5, bool)
  perm = ae.cyclic_shift(jnp.int32(5), 5, 1)
  graphdef, params, stats = loop.split_model(model)
  _, shifted = ae.deepsmote_loss(
    loop.merge_model(graphdef, params, stats), xc[:1], penalty="reference", class_images=xc, valid=valid, perm=perm
  )
  m = loop.merge_model(graphdef, params, stats)
  m.encoder(xc[:1], train=True)  # the same BatchNorm updates as in deepsmote_loss before the penalty
  m.decoder(m.encoder(xc[:1], train=True), train=True)
  direct = ae.masked_mse(m.decoder(m.encoder(xc, train=True), train=True), xc)
  assert float(shifted["penalty"]) == pytest.approx(float(direct), rel=1e-5)


def test_edge_error_charges_a_blurred_line_more_than_the_mse_does():
  """A 1-px line blurred over 3 px: the MSE barely moves; the edge term counts the lost edges (by hand)."""
  sharp = np.zeros((1, 16, 16, 1), np.float32)
  sharp[0, 8, :, 0] = 1.0
  blurred = np.zeros_like(sharp)
  blurred[0, 7:10, :, 0] = 1.0 / 3
  mse = float(ae.reconstruction_error(jnp.asarray(blurred), jnp.asarray(sharp)))
  assert mse == pytest.approx(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 16, rel=1e-6)  # one row of three off, of 16
  # vertical differences of the line: (0,1,-1,0) against (1/3,0,0,-1/3) on 15 x 16 pairs; horizontal: none
  edge = ((1 / 3) ** 2 + 1 + 1 + (1 / 3) ** 2) / 15
  with_edges = float(ae.reconstruction_error(jnp.asarray(blurred), jnp.asarray(sharp), edge_weight=2.0))
  assert with_edges == pytest.approx(mse + 2.0 * edge, rel=1e-6)
  assert float(ae.reconstruction_error(jnp.asarray(sharp), jnp.asarray(sharp), edge_weight=2.0)) == 0.0
  # masked rows count in neither term
  pair = jnp.asarray(np.concatenate([blurred, sharp])), jnp.asarray(np.concatenate([sharp, 1 - sharp]))
  masked = ae.reconstruction_error(*pair, jnp.array([True, False]), edge_weight=2.0)
  assert float(masked) == pytest.approx(with_edges, rel=1e-6)


def test_edge_weight_reaches_both_loss_terms():
  model = build_autoencoder(MICRO, seed=0)
  x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 1), minval=-1, maxval=1)
  graphdef, params, stats = loop.split_model(model)
  sample = dict(class_images=x, valid=jnp.ones(4, bool), perm=ae.cyclic_shift(jnp.int32(4), 4, 1))
  plain = ae.deepsmote_loss(loop.merge_model(graphdef, params, stats), x, penalty="reference", **sample)[1]
  edged = ae.deepsmote_loss(
    loop.merge_model(graphdef, params, stats), x, penalty="reference", edge_weight=1.0, **sample
  )[1]
  assert float(edged["recon"]) > float(plain["recon"]) and float(edged["penalty"]) > float(plain["penalty"])


def test_cyclic_shift_moves_every_valid_entry():
  perm = np.asarray(ae.cyclic_shift(jnp.int32(4), 6, 1))
  assert perm.tolist() == [1, 2, 3, 0, 4, 5]
  for off in (1, 2, 3):
    p = np.asarray(ae.cyclic_shift(jnp.int32(4), 6, off))
    assert sorted(p[:4]) == [0, 1, 2, 3] and all(p[:4] != np.arange(4))


def test_class_sample_is_one_class_without_replacement():
  labels = np.array([0] * 7 + [1] * 3 + [2] * 1)  # class 2 has a single image: never drawn
  table, counts = ae.class_index_table(labels, 3)
  seen = set()
  for i in range(60):
    c, idx, valid, n = ae.sample_class(jax.random.key(i), jnp.asarray(table), jnp.asarray(counts), 5)
    c, idx, valid, n = int(c), np.asarray(idx), np.asarray(valid), int(n)
    seen.add(c)
    assert c in (0, 1) and n == min(counts[c], 5) and valid.sum() == n
    assert len(set(idx[valid])) == n and all(labels[idx[valid]] == c)
  assert seen == {0, 1}


def test_epoch_batches_cover_every_image_once():
  idx, mask = ae.BatchPlan(23, 8, seed=3).epoch(1)
  assert idx.shape == (3, 8) and mask.sum() == 23
  assert sorted(idx[mask].tolist()) == list(range(23))


def _train(tmp_path, name, cfg, images, labels, **kw):
  model = build_autoencoder(MICRO, seed=cfg.seed)
  return ae.train_autoencoder(model, images, labels, cfg, workdir=str(tmp_path / name), progress=False, **kw)


CFG = ae.AETrainConfig(epochs=2, batch_size=8, steps_per_call=2, penalty_sample_size=6, compute_dtype="float32")


def test_resume_equals_uninterrupted_and_same_seed_same_result(tmp_path):
  images, labels = _images()
  full = _train(tmp_path, "full", CFG, images, labels, checkpoint_every_steps=2)
  _train(tmp_path, "killed", CFG, images, labels, checkpoint_every_steps=2, stop_after_steps=4)
  resumed = _train(tmp_path, "killed", CFG, images, labels, checkpoint_every_steps=2, resume=True)
  assert full.summary["final_step"] == resumed.summary["final_step"] == 6
  assert resumed.summary["steps_run"] == 2
  for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(resumed.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  again = _train(tmp_path, "again", CFG, images, labels)
  for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(again.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  other = _train(tmp_path, "other", dataclasses.replace(CFG, seed=1), images, labels)
  assert any(
    not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(other.state.params))
  )


def test_checkpoints_of_another_run_are_never_mixed(tmp_path):
  images, labels = _images()
  _train(tmp_path, "w", CFG, images, labels, checkpoint_every_steps=2, stop_after_steps=4)
  metrics_before = (tmp_path / "w" / "metrics.jsonl").read_text()
  # A fresh run into the same workdir refuses instead of mixing in the old checkpoints.
  with pytest.raises(ValueError, match=r"holds the checkpoints of an earlier run \(latest step 4\)"):
    _train(tmp_path, "w", CFG, images, labels)
  # A resume must match the checkpoint's settings and data, and says what differs.
  with pytest.raises(ValueError, match=r"cannot resume .*train.seed: 0 -> 1"):
    _train(tmp_path, "w", dataclasses.replace(CFG, seed=1), images, labels, resume=True)
  with pytest.raises(ValueError, match=r"cannot resume .*data: "):
    _train(tmp_path, "w", CFG, images[::-1].copy(), labels, resume=True)
  other_spec = MICRO.replace(latent_dim=9)
  with pytest.raises(ValueError, match=r"cannot resume .*spec.latent_dim: 8 -> 9"):
    ae.train_autoencoder(
      build_autoencoder(other_spec), images, labels, CFG, workdir=str(tmp_path / "w"), progress=False, resume=True
    )
  assert (tmp_path / "w" / "metrics.jsonl").read_text() == metrics_before  # refusals touch nothing
  # More epochs is a legitimate resume; --overwrite starts over and equals a fresh run.
  longer = _train(tmp_path, "w", dataclasses.replace(CFG, epochs=3), images, labels, resume=True)
  assert longer.summary["final_step"] == 9 and longer.summary["steps_run"] == 5
  steps = [json.loads(line)["step"] for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(set(steps))  # no step logged twice across the resume
  over = _train(tmp_path, "w", CFG, images, labels, overwrite=True)
  fresh = _train(tmp_path, "fresh", CFG, images, labels)
  for a, b in zip(jax.tree.leaves(over.state.params), jax.tree.leaves(fresh.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mismatched_channels_and_bad_settings_fail_before_compiling():
  images, labels = _images(channels=3)
  model = build_autoencoder(MICRO, seed=0)
  with pytest.raises(ValueError, match="model.image_size / model.channels"):
    ae.train_autoencoder(model, images, labels, CFG, progress=False)
  images, labels = _images()
  with pytest.raises(ValueError, match="penalty='nope'"):
    ae.train_autoencoder(model, images, labels, dataclasses.replace(CFG, penalty="nope"), progress=False)
  with pytest.raises(ValueError, match=r"validation images are \(8, 8, 1\) but the model"):
    ae.train_autoencoder(model, images, labels, CFG, val=(images[:, :8, :8], labels), progress=False)
  with pytest.raises(ValueError, match="validation labels reach 5, but training has 3 classes"):
    ae.train_autoencoder(model, images, labels, CFG, val=(images[:2], np.array([0, 5])), progress=False)
  with pytest.raises(ValueError, match=r"config.train has unknown setting\(s\) \['learnin_rate'\]"):
    config_lib.to_dataclass(ae.AETrainConfig, {"epochs": 1, "learnin_rate": 1e-3}, "train")
  with pytest.raises(ValueError, match="config.train.epochs must be >= 1, got 0"):
    config_lib.to_dataclass(ae.AETrainConfig, {"epochs": 0}, "train")


def test_loss_falls_on_magnetic_tile(magnetic_tile, tmp_path):
  ds = load_image_folder(magnetic_tile, image_size=64, channels=1, classes=["blowhole", "crack"])
  rng = np.random.default_rng(0)
  keep = np.concatenate([rng.choice(np.flatnonzero(ds.labels == c), 24, replace=False) for c in (0, 1)])
  model = build_autoencoder("tiny_64", seed=0)
  cfg = ae.AETrainConfig(
    epochs=12, batch_size=16, steps_per_call=3, penalty_sample_size=16, learning_rate=2e-3, compute_dtype="float32"
  )
  result = ae.train_autoencoder(model, ds.images[keep], ds.labels[keep], cfg, workdir=str(tmp_path), progress=False)
  import json

  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  first, last = records[0], records[-1]
  assert last["recon"] < 0.7 * first["recon"], (first, last)
  assert last["penalty"] < first["penalty"]
  # Eval-mode reconstructions of the training images beat predicting the mean image.
  x = ds.images[keep].astype(np.float32) / 127.5 - 1
  recon = ae.decode_codes(result.model, ae.encode_images(result.model, ds.images[keep])).astype(np.float32) / 127.5 - 1
  assert np.mean((recon - x) ** 2) < np.mean((x - x.mean(axis=0)) ** 2)


def test_one_channel_in_three_out_trains_with_the_target_broadcast(tmp_path):
  """The paper's Fig. 3 layout (1 channel encoded, 3 decoded) trains: the grayscale target is broadcast to the
  three output channels; generation gives images in the data's own channels."""
  from deepsmote_jax.data.folder import ImageSet
  from deepsmote_jax.jobs.generate import generate_dataset

  images, labels = _images()
  model = build_autoencoder(MICRO.replace(out_channels=3), seed=0)
  result = ae.train_autoencoder(model, images, labels, CFG, progress=False)
  assert np.isfinite(result.summary["loss"])
  codes = ae.encode_images(result.model, images[:4])
  assert ae.decode_codes(result.model, codes).shape == (4, 16, 16, 3)
  # Residual synthesis brings the 3-channel decoded change to the data's 1 channel (its channel mean).
  new = ae.encode_images(result.model, images[4:8])
  residual = ae.synthesize(result.model, new, synthesis="residual", base_codes=codes, base_images=images[:4])
  change = ae.decode_codes(result.model, new).astype(float) - ae.decode_codes(result.model, codes)
  expected = images[:4] + change.mean(-1, keepdims=True)
  inside = (expected > 2) & (expected < 253)
  assert residual.shape == (4, 16, 16, 1) and inside.mean() > 0.5
  np.testing.assert_allclose(residual[inside], expected[inside], atol=1.5)  # two roundings of D(.) to uint8
  ds = ImageSet(images=images, labels=labels, class_names=["A", "B", "C"], files=[f"{i}.png" for i in range(24)])
  scarce = ds.subset(np.r_[np.flatnonzero(labels != 2), np.flatnonzero(labels == 2)[:4]])  # C: 4 of 8
  summary = generate_dataset(result.model, scarce, tmp_path / "out", copy_originals="none")
  assert summary["counts_new"] == {"A": 0, "B": 0, "C": 4}
  from PIL import Image

  modes = {Image.open(p).mode for p in (tmp_path / "out" / "C").glob("*.png")}
  assert modes == {"L"} and len(list((tmp_path / "out" / "C").glob("*.png"))) == 4  # the data's 1 channel


@pytest.mark.parametrize("choice", ["uniform", "inverse_count"])
def test_penalty_class_draws_follow_the_choice(choice):
  """Over 20,000 in-jit draws each eligible class's frequency is within 0.015 of its probability (> 4 standard
  errors); the class with a single image is never drawn."""
  counts = np.array([40, 10, 5, 1])
  table, counts = (jnp.asarray(a) for a in ae.class_index_table(np.repeat(np.arange(4), counts), 4))
  keys = jax.random.split(jax.random.key(0), 20_000)
  draw = jax.jit(jax.vmap(lambda k: ae.sample_class(k, table, counts, 4, classes=choice)[0]))
  freq = np.bincount(np.asarray(draw(keys)), minlength=4) / len(keys)
  want = np.array([1, 1, 1, 0]) / 3 if choice == "uniform" else np.array([1 / 40, 1 / 10, 1 / 5, 0]) / 0.325
  np.testing.assert_allclose(freq, want, atol=0.015)
  assert freq[3] == 0


def test_new_training_settings_are_checked():
  """Bad values are errors naming config.train.<key> (that penalty_weight scales the penalty: `_penalty_grads`)."""
  for key, value, message in [
    ("penalty_weight", 0.0, "config.train.penalty_weight must be > 0"),
    ("penalty_classes", "rare", "config.train.penalty_classes='rare': choose one of"),
    ("select_metric", "mse", "config.train.select_metric='mse': choose one of"),
    ("val_fraction", 1.0, r"config.train.val_fraction must be in \[0, 1\)"),
    ("edge_weight", -0.5, "config.train.edge_weight must be >= 0"),
  ]:
    with pytest.raises(ValueError, match=message):
      config_lib.to_dataclass(ae.AETrainConfig, {key: value}, "train")


def _ssim_reference(x, y, size=11, sigma=1.5):
  """SSIM of two (H, W) images by the definition: Gaussian-weighted moments in every window that fits."""
  g = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
  w = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2, vals = 0.01**2, 0.03**2, []
  for i in range(x.shape[0] - size + 1):
    for j in range(x.shape[1] - size + 1):
      a, b = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
      ma, mb = (w * a).sum(), (w * b).sum()
      va, vb, cov = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2, (w * a * b).sum() - ma * mb
      vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
  return np.mean(vals)


def test_psnr_and_ssim_on_known_cases():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(2, 14, 14, 1)).astype(np.float32)
  assert np.all(np.isinf(np.asarray(ae.psnr(x, x)))) and np.allclose(ae.ssim(x, x), 1.0, atol=1e-6)
  # +-0.1 in a checkerboard: MSE 0.01 -> 20 dB exactly.
  noise = 0.1 * np.where(np.indices((14, 14)).sum(0) % 2, 1.0, -1.0)[None, :, :, None]
  np.testing.assert_allclose(ae.psnr(np.full_like(x, 0.5), 0.5 + noise), 20.0, rtol=1e-5)
  # Two flat images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1).
  a, b, c1 = 0.3, 0.6, 0.01**2
  flat = ae.ssim(np.full((1, 12, 12, 1), a), np.full((1, 12, 12, 1), b))
  np.testing.assert_allclose(flat, (2 * a * b + c1) / (a * a + b * b + c1), rtol=1e-5)
  y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
  np.testing.assert_allclose(ae.ssim(x, y), [_ssim_reference(x[i, ..., 0], y[i, ..., 0]) for i in range(2)], rtol=1e-4)


def _val_scores(model, images, labels, fn):
  """Eval-mode reconstruction scores by the training loop's definition: mean over classes of per-class means."""
  x = images.astype(np.float32) / 127.5 - 1
  recon = jax.jit(lambda x: model.decoder(model.encoder(x, train=False), train=False))(x)
  per_image = np.asarray(fn((np.clip(recon, -1, 1) + 1) / 2, (x + 1) / 2))
  return np.mean([per_image[labels == c].mean() for c in np.unique(labels)])


def test_best_validation_state_is_kept_across_a_kill_and_resume(tmp_path):
  """Gray validation images: SSIM falls as the model learns the training patterns, so the best state is an
  early one; a run killed after it and resumed still returns that state (from best_val.npz)."""
  images, labels = _images()
  val = (np.full((6, 16, 16, 1), 128, np.uint8), np.arange(6) % 3)
  cfg = dataclasses.replace(CFG, epochs=3, learning_rate=2e-3, select_metric="ssim")
  killed = _train(tmp_path, "w", cfg, images, labels, val=val, checkpoint_every_steps=2, stop_after_steps=6)
  resumed = _train(tmp_path, "w", cfg, images, labels, val=val, checkpoint_every_steps=2, resume=True)
  records = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  evals = {r["step"]: r["val_ssim"] for r in records if "val_ssim" in r}
  assert sorted(evals) == [4, 6, 9]  # every epoch end (3 steps) at the first call boundary after it, and the end
  s = resumed.summary
  assert s["best_step"] == max(evals, key=evals.get) == killed.summary["best_step"] <= 6 and "selection_note" not in s
  assert (
    s["best_score"]
    == pytest.approx(evals[s["best_step"]])
    == pytest.approx(_val_scores(resumed.best_model, *val, ae.ssim), rel=1e-5)
  )
  same = zip(
    jax.tree.leaves(loop.split_model(killed.best_model)[1:]), jax.tree.leaves(loop.split_model(resumed.best_model)[1:])
  )
  for a, b in same:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert s["final_val"]["step"] == 9 and len(s["best_val"]["ssim_per_class"]) == 3


def test_job_exports_the_best_state_by_validation_psnr(tmp_path):
  from deepsmote_jax.data.folder import ImageSet
  from deepsmote_jax.export import load_autoencoder
  from deepsmote_jax.jobs.train_autoencoder import train_and_export

  def image_set(images, labels):
    return ImageSet(
      images=images, labels=labels, class_names=["A", "B", "C"], files=[f"{i}.png" for i in range(len(labels))]
    )

  config = config_lib.autoencoder_config(preset="micro_16", channels=1, epochs=3, batch_size=8)
  config.train.update(steps_per_call=2, penalty_sample_size=6, compute_dtype="float32", learning_rate=2e-3)
  val = image_set(*_images(n=9, seed=5))
  summary = train_and_export(config, str(tmp_path), progress=False, image_set=image_set(*_images()), val_set=val)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  evals = {r["step"]: r["val_psnr"] for r in records if "val_psnr" in r}
  assert len(evals) == 3 and summary["best_step"] == max(evals, key=evals.get)
  model, meta = load_autoencoder(tmp_path / "autoencoder")
  assert meta["validation"]["step"] == summary["best_step"] and set(meta["validation"]["psnr_per_class"]) == {
    "A",
    "B",
    "C",
  }
  assert _val_scores(model, val.images, val.labels, ae.psnr) == pytest.approx(max(evals.values()), rel=1e-5)
  assert (tmp_path / "val_reconstructions.png").is_file()


def test_standalone_job_holds_out_val_fraction_of_each_class():
  from deepsmote_jax.data.folder import ImageSet
  from deepsmote_jax.jobs.train_autoencoder import _validation_split

  images, labels = _images(n=40)
  ds = ImageSet(images=images, labels=labels, class_names=["A", "B", "C"], files=[f"{i}.png" for i in range(40)])
  config = config_lib.autoencoder_config(preset="micro_16", channels=1, epochs=1, batch_size=8)
  train, val = _validation_split(config, dataclasses.replace(CFG, val_fraction=0.25), ds, None)
  assert len(train) + len(val) == 40 and not set(train.files) & set(val.files)
  assert all(n >= 2 for n in val.counts().values()), val.counts()  # every class held out in about that share
  same, none = _validation_split(config, CFG, ds, None)  # val_fraction 0: nothing held out
  assert same is ds and none is None
  other = ImageSet(images=images, labels=labels, class_names=["A", "B", "X"], files=ds.files)
  with pytest.raises(ValueError, match="validation classes"):
    _validation_split(config, CFG, ds, other)
