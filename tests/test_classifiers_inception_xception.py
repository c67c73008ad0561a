"""InceptionV3 / Xception (Flax NNX) against `keras.applications` built with weights=None (no downloads).

Flax models are built with `nnx.eval_shape` and filled from Keras, which skips the slow per-shape random init on CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from deepsmote_jax.models.classifiers import InceptionV3, WeightMismatchError, Xception, load_keras_weights, param_count  # noqa: E402

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

# Keras' get/set_weights trips a numpy-2 __array__ note; keep the output readable.
# One xdist worker runs this module (`--dist loadgroup`), so its module-scoped fixture is built once.
pytestmark = [
  pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
  pytest.mark.xdist_group("classifiers_inception_xception"),
]

SIZE = {"inception_v3": 75, "xception": 71}
FLAX_CLS = {"inception_v3": InceptionV3, "xception": Xception}


def _keras_cls(arch):
  return {"inception_v3": keras.applications.InceptionV3, "xception": keras.applications.Xception}[arch]


def _randomise(model, seed):
  """Random BN gamma/beta/moving stats and dense bias, so BatchNorm is far from the identity."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if not layer.weights:
      continue
    values = []
    for w in layer.weights:
      name, shape = w.name.split(":")[0].rsplit("/", 1)[-1], tuple(w.shape)
      if name in ("gamma", "moving_variance"):
        values.append(rng.uniform(0.5, 1.5, shape))
      elif name in ("beta", "moving_mean", "bias"):
        values.append(rng.normal(0.0, 0.2, shape))
      else:
        values.append(w.numpy())
    layer.set_weights([np.asarray(v, np.float32) for v in values])
  return model


def _build_keras(arch, *, channels=3, include_top=True, classes=1000, seed=0):
  size = SIZE[arch]
  kwargs = dict(include_top=include_top, weights=None, input_shape=(size, size, channels))
  kwargs.update(dict(classes=classes, classifier_activation=None) if include_top else dict(pooling="avg"))
  return _randomise(_keras_cls(arch)(**kwargs), seed)


@pytest.fixture(scope="module", params=["inception_v3", "xception"])
def kmodels(request):
  """Per architecture: randomised Keras models (1000 classes; 2 classes; 1-channel without top), built once."""
  arch = request.param
  return arch, {
    "top1000": _build_keras(arch, seed=0),
    "top2": _build_keras(arch, classes=2, seed=1),
    "gray_notop": _build_keras(arch, channels=1, include_top=False, seed=2),
  }


def _abstract(arch, num_classes=1000, **kwargs):
  return nnx.eval_shape(lambda: FLAX_CLS[arch](num_classes, rngs=nnx.Rngs(0), **kwargs))


def _loaded(arch, source, num_classes=1000, skip_top=False, **kwargs):
  model = _abstract(arch, num_classes, **kwargs)
  load_keras_weights(model, source, skip_top=skip_top)
  return model


@pytest.fixture(scope="module")
def top1000(kmodels):
  """The Flax twin of kmodels' 'top1000' with its weights (tests must leave it unchanged)."""
  arch, k = kmodels
  return _loaded(arch, k["top1000"])


def _inputs(arch, channels=3, seed=0, batch=2):
  size = SIZE[arch]
  return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, channels)).astype(np.float32)


@nnx.jit(static_argnames="train")
def _forward(model, x, train=False):
  return model(x, train=train)


def _leaves(model):
  return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model))]


def test_param_count_matches_keras(kmodels):
  arch, k = kmodels
  assert param_count(_abstract(arch, 1000)) == k["top1000"].count_params()
  assert param_count(_abstract(arch, 2)) == k["top2"].count_params()
  assert param_count(_abstract(arch, 5, in_channels=1, include_top=False)) == k["gray_notop"].count_params()
  assert param_count(_abstract(arch, 1000, dropout_rate=0.5)) == k["top1000"].count_params()
  if arch == "inception_v3":  # the aux head is not in Keras and is left out of the count
    with_aux = _abstract(arch, 1000, aux_head=True)
    assert param_count(with_aux) == k["top1000"].count_params() < param_count(with_aux, include_aux=True)


def test_eval_logits_and_features_match_keras(kmodels, top1000):
  arch, k = kmodels
  x = _inputs(arch)
  model = top1000
  ref = np.asarray(k["top1000"](x, training=False))
  out = np.asarray(_forward(model, x))
  scale = np.abs(ref).max()
  diff = np.abs(out - ref).max()
  print(f"\n{arch}: eval logits max|diff| {diff:.3g} (max|logit| {scale:.3g})")
  assert out.shape == (2, 1000) and out.dtype == np.float32
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * max(scale, 1.0))

  # include_top=False + skip_top: pooled 2048-d features equal Keras' 'avg_pool' output.
  with pytest.warns(UserWarning, match="skip_top=True"):
    backbone = _loaded(arch, k["top1000"], include_top=False, skip_top=True)
  feats = np.asarray(_forward(backbone, x))
  k_feats = np.asarray(keras.Model(k["top1000"].input, k["top1000"].get_layer("avg_pool").output)(x, training=False))
  fdiff = np.abs(feats - k_feats).max()
  print(f"{arch}: pooled features max|diff| {fdiff:.3g} (max {np.abs(k_feats).max():.3g})")
  assert feats.shape == (2, 2048)
  np.testing.assert_allclose(feats, k_feats, rtol=1e-4, atol=1e-4 * max(np.abs(k_feats).max(), 1.0))

  # bf16 compute: parameters/BN stats stay float32, output close to float32.
  bf16 = _loaded(arch, k["top1000"], dtype=jnp.bfloat16)
  assert {v.dtype for v in jax.tree.leaves(nnx.state(bf16))} == {np.dtype(np.float32)}
  out16 = np.asarray(_forward(bf16, x))
  bdiff = np.abs(out16 - out).max()
  print(f"{arch}: bf16 vs fp32 logits max|diff| {bdiff:.3g}")
  assert out16.dtype == np.float32 and np.all(np.isfinite(out16))
  assert bdiff < 0.1 * scale
  assert np.corrcoef(out16.ravel(), out.ravel())[0, 1] > 0.99


def test_load_by_path(kmodels, tmp_path):
  arch, k = kmodels
  direct = _leaves(_loaded(arch, k["top2"], 2))
  paths = [tmp_path / "m.weights.h5"]
  k["top2"].save_weights(paths[0])
  if arch == "inception_v3":
    paths.append(tmp_path / "m.keras")
    k["top2"].save(paths[1])
  else:  # legacy HDF5 full-model file (the layout of the keras-applications ImageNet downloads)
    paths.append(tmp_path / "m.h5")
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # Keras' "HDF5 is legacy" note
      k["top2"].save(paths[1])
  for path in paths:
    model = _abstract(arch, 2)
    n = load_keras_weights(model, str(path))
    assert n == len(k["top2"].weights), path
    for a, b in zip(_leaves(model), direct):
      np.testing.assert_array_equal(a, b)


def test_mismatched_file_names_every_tensor(kmodels, top1000, tmp_path):
  arch, k = kmodels
  first_conv = next(l for l in k["gray_notop"].layers if l.weights).name  # conv2d_<n> / block1_conv1
  path = tmp_path / "gray.weights.h5"
  k["gray_notop"].save_weights(path)
  model = top1000
  before = _leaves(model)

  with pytest.raises(WeightMismatchError) as err:  # 1 channel, no top, into a 3-channel model with a top
    load_keras_weights(model, str(path))
  msg = str(err.value)
  assert f"{first_conv}/kernel" in msg and str(path) in msg
  assert "predictions/kernel" in msg and "predictions/bias" in msg
  assert msg.count("\n") == 3, msg  # exactly those three tensors
  for a, b in zip(_leaves(model), before):  # all-or-nothing: the model is untouched
    np.testing.assert_array_equal(a, b)

  with pytest.raises(WeightMismatchError) as err:  # 2-class top into a 1000-class model
    load_keras_weights(model, k["top2"])
  assert "predictions/kernel" in str(err.value) and "predictions/bias" in str(err.value)
  assert "(2048, 2)" in str(err.value) and "skip_top=True" in str(err.value)

  with pytest.raises(WeightMismatchError, match="include_top=False"):  # a top into a headless model
    load_keras_weights(_abstract(arch, 2, include_top=False), k["top2"])

  headless = _abstract(arch, 2, in_channels=1, include_top=False)
  assert load_keras_weights(headless, str(path)) == len(k["gray_notop"].weights)
  with pytest.raises(ValueError, match="still abstract"):  # skipped top of an eval_shape model stays abstract
    with pytest.warns(UserWarning, match="not loaded: predictions"):
      load_keras_weights(_abstract(arch, 2), k["top1000"], skip_top=True)


def _materialise(model, seed=0):
  """Concrete values for variables still abstract (e.g. the aux head of an eval_shape model)."""
  rng = np.random.default_rng(seed)
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Variable) and isinstance(node.get_value(), jax.ShapeDtypeStruct):
      s = node.get_value()
      fill = {"mean": np.zeros, "var": np.ones, "bias": np.zeros}.get(path[-1])
      value = fill(s.shape) if fill else rng.normal(0.0, 0.02, s.shape)
      node.set_value(np.asarray(value, s.dtype))


def test_train_mode_batch_stats_and_aux(kmodels):
  arch, k = kmodels
  # Batch 8: at 75 px InceptionV3's last blocks are 1x1, so batch-2 statistics come from 2 values per channel and
  # are ill-conditioned (float32 rounding then moves the logits by ~1%; with 8 samples the match is ~1e-4).
  x = _inputs(arch, seed=3, batch=8)
  kmodel = k["top1000"]
  aux = arch == "inception_v3"
  model = _abstract(arch, 1000, **({"aux_head": True} if aux else {}))
  _materialise(model)
  load_keras_weights(model, kmodel)
  if aux:
    eval_out = nnx.eval_shape(lambda m: m(x, train=False), model)
    assert isinstance(eval_out, jax.ShapeDtypeStruct) and eval_out.shape == (8, 1000)

  bns = [l for l in kmodel.layers if isinstance(l, keras.layers.BatchNormalization)]
  saved = [l.get_weights() for l in bns]
  try:
    k_logits = np.asarray(kmodel(x, training=True))  # batch statistics; updates the moving averages
    k_means = [np.asarray(l.moving_mean) for l in bns]
    k_vars = [np.asarray(l.moving_variance) for l in bns]
  finally:
    for layer, weights in zip(bns, saved):
      layer.set_weights(weights)

  flax_bns = _bn_pairs(model, bns)
  old_mean = np.asarray(flax_bns[0][0]["moving_mean"].get_value())
  out = _forward(model, x, train=True)
  if aux:
    logits, aux_logits = out
    assert aux_logits.shape == (8, 1000) and np.all(np.isfinite(np.asarray(aux_logits)))
  else:
    logits = out
  logits = np.asarray(logits)
  diff = np.abs(logits - k_logits).max()
  print(f"\n{arch}: train-mode logits max|diff| {diff:.3g} (max {np.abs(k_logits).max():.3g})")
  np.testing.assert_allclose(logits, k_logits, rtol=1e-3, atol=1e-3 * max(np.abs(k_logits).max(), 1.0))

  assert not np.allclose(np.asarray(flax_bns[0][0]["moving_mean"].get_value()), old_mean)  # running stats moved
  # Same momentum convention as Keras (0.99): compare the updated moving stats of the first BN layers.
  for targets, i in flax_bns[:5]:
    np.testing.assert_allclose(np.asarray(targets["moving_mean"].get_value()), k_means[i], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(targets["moving_variance"].get_value()), k_vars[i], rtol=1e-4, atol=1e-5)


def _bn_pairs(model, keras_bns):
  """({Keras variable name: Flax variable}, index into `keras_bns`) for each BatchNorm of `model`.

  Named layers match by name; auto-named ones (batch_normalization, batch_normalization_1, ...) in the order of
  their numeric suffix, i.e. creation order.
  """

  def suffix(layer):
    return int(layer.name.rsplit("_", 1)[1]) if re.fullmatch(r".*_\d+", layer.name) else 0

  auto = iter(
    sorted(
      (i for i, l in enumerate(keras_bns) if re.fullmatch(r"batch_normalization(_\d+)?", l.name)),
      key=lambda i: suffix(keras_bns[i]),
    )
  )
  by_name = {l.name: i for i, l in enumerate(keras_bns)}
  pairs = []
  for layer in model.keras_layers():
    targets = {t.name: t.variable for t in layer.targets or ()}
    if "moving_mean" in targets:
      pairs.append((targets, next(auto) if layer.auto else by_name[layer.name]))
  return pairs


def _shifted_weights(kmodel, path):
  """`kmodel`'s .weights.h5 with every tensor + 1 and one class fewer in its last layer, 'predictions'.

  A loader that copied layer by layer would change the model before reaching the last layer.
  """
  kmodel.save_weights(path)
  with h5py.File(path, "r+") as f:
    for group in (g["vars"] for g in f["layers"].values() if "vars" in g):
      for key in group:
        group[key][...] = group[key][...] + 1
    top = _top_vars(f)
    kernel = top["0"][...]
    del top["0"]
    top["0"] = kernel[:, :-1]
  return path


def _top_vars(f):
  return next(g["vars"] for g in f["layers"].values() if "vars" in g and g["vars"].attrs.get("name") == "predictions")


def _drop_top(path):
  """Removes the tensors of the last layer, 'predictions'."""
  with h5py.File(path, "r+") as f:
    top = _top_vars(f)
    for key in list(top):
      del top[key]


def test_failed_load_leaves_model_unchanged(kmodels, top1000, tmp_path):
  """Sources that fail only at their last layer (every other tensor fits and differs) change nothing."""
  _, k = kmodels
  path = _shifted_weights(k["top1000"], tmp_path / "shifted.weights.h5")
  before = _leaves(top1000)
  for expected in (["predictions/kernel"], ["predictions/kernel", "predictions/bias"]):  # wrong shape, missing
    with pytest.raises(WeightMismatchError) as err:
      load_keras_weights(top1000, str(path))
    assert [line.split(":")[0].strip() for line in str(err.value).splitlines()[1:]] == expected, str(err.value)
    after = _leaves(top1000)
    assert len(after) == len(before)
    for a, b in zip(after, before):
      np.testing.assert_array_equal(a, b)
    _drop_top(path)


def test_modules_import_without_tensorflow():
  heavy = "{'tensorflow', 'keras', 'h5py'}"
  code = (
    "import sys, deepsmote_jax.models.classifiers, deepsmote_jax.models.classifiers.keras_weights; "
    f"loaded = {heavy} & set(sys.modules); assert not loaded, sorted(loaded)"
  )
  subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
