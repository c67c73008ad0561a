"""ResNet50 / EfficientNet-B0 / B5 against keras.applications, and the SmallCNN.

Keras models are built with weights=None (no downloads) once per module. Flax models that receive Keras
weights are built abstractly (`nnx.eval_shape`) and filled by `load_keras_weights`, which skips the slow
random initialisation on CPU.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from deepsmote_jax.models.classifiers import (  # noqa: E402
  EfficientNet,
  EfficientNetB0,
  EfficientNetB5,
  ResNet50,
  SmallCNN,
  WeightMismatchError,
  load_keras_weights,
  param_count,
)

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

SIZE = 32  # smallest input both Keras models accept

# Keras' TensorFlow backend trips a NumPy 2 deprecation on every weight read; it is not ours to fix. One xdist
# worker runs this module (`--dist loadgroup`), so its module-scoped fixtures are built once.
pytestmark = [
  pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
  pytest.mark.xdist_group("classifiers_resnet_efficientnet"),
]


def _randomise(model, seed: int):
  """Positive, non-trivial BN statistics/affine and input-normalisation stats, so nothing is an identity."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    kind = type(layer).__name__
    if kind == "BatchNormalization":
      n = layer.moving_mean.shape
      layer.moving_mean.assign(rng.uniform(0.05, 0.5, n).astype("float32"))
      layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
      layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
      layer.beta.assign(rng.normal(0.0, 0.2, n).astype("float32"))
    elif kind == "Normalization":
      c = layer.adapt_mean.shape
      layer.adapt_mean.assign(rng.uniform(0.3, 0.6, c).astype("float32"))
      layer.adapt_variance.assign(rng.uniform(0.04, 0.08, c).astype("float32"))
      layer.finalize_state()  # Keras snapshots mean/variance at build time
  return model


@pytest.fixture(scope="module", autouse=True)
def _fast_tracer_errors():
  """Speeds up tracing ~10x for these big models (test-only workaround of an upstream slowdown).

  flax's `Variable.set_value` probes `getattr(tracer, 'sharding', None)` for every RNG-count (and BN
  statistics) update; on a tracer that builds an error message whose `_origin_msg` walks the whole trace,
  so `nnx.eval_shape` of EfficientNetB5 spends ~90% of its time there. Only that message text is dropped.
  """
  try:
    from jax._src.interpreters import partial_eval as pe  # pylint: disable=g-import-not-at-top

    original = pe.DynamicJaxprTracer._origin_msg
  except (ImportError, AttributeError):
    yield
    return
  pe.DynamicJaxprTracer._origin_msg = lambda self: ""
  try:
    yield
  finally:
    pe.DynamicJaxprTracer._origin_msg = original


def _abstract(build):
  return nnx.eval_shape(build)


def _materialise(model):
  """Gives the RNG streams left abstract by `nnx.eval_shape` concrete values; everything else must be loaded."""
  graphdef, state = nnx.split(model)
  counter = iter(range(10**6))

  def fill(path, leaf):
    if not isinstance(leaf, jax.ShapeDtypeStruct):
      return leaf
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(next(counter))
    assert "rngs" in jax.tree_util.keystr(path), f"{jax.tree_util.keystr(path)} was not loaded"
    return jnp.zeros(leaf.shape, leaf.dtype)

  state = jax.tree_util.tree_map_with_path(fill, state)
  return nnx.merge(graphdef, state)


def _load(build, source, **kwargs):
  model = _abstract(build)
  copied = load_keras_weights(model, source, **kwargs)
  return _materialise(model), copied


@nnx.jit
def _eval_logits(model, x):
  return model(x, train=False)


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keras_r50():
  keras.utils.set_random_seed(0)
  model = keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
  return _randomise(model, 0)


@pytest.fixture(scope="module")
def keras_b0():
  keras.utils.set_random_seed(0)
  model = keras.applications.EfficientNetB0(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
  return _randomise(model, 1)


@pytest.fixture(scope="module")
def keras_b5():
  keras.utils.set_random_seed(0)
  model = keras.applications.EfficientNetB5(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
  return _randomise(model, 2)


@pytest.fixture(scope="module")
def flax_r50(keras_r50):
  return _load(lambda: ResNet50(1000, rngs=nnx.Rngs(0)), keras_r50)


@pytest.fixture(scope="module")
def flax_b0(keras_b0):
  return _load(lambda: EfficientNetB0(1000, rngs=nnx.Rngs(0)), keras_b0)


@pytest.fixture(scope="module")
def flax_b5(keras_b5):
  return _load(lambda: EfficientNetB5(1000, rngs=nnx.Rngs(0)), keras_b5)


def _images(seed: int, scale: float):
  return np.random.default_rng(seed).uniform(0.0, scale, (2, SIZE, SIZE, 3)).astype(np.float32)


def _state_arrays(model):
  state = nnx.state(model, nnx.Not(nnx.RngState))
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}


# --------------------------------------------------------------------------------- parameter counts


_ARCH_FIXTURES = {"resnet50": ("keras_r50", "flax_r50"), "b0": ("keras_b0", "flax_b0"), "b5": ("keras_b5", "flax_b5")}


@pytest.mark.parametrize("arch", ["resnet50", "b0", "b5"])
@pytest.mark.parametrize(
  "config",
  [dict(num_classes=1000), dict(num_classes=7), dict(num_classes=1000, include_top=False)],
  ids=["1000", "7", "notop"],
)
def test_param_count_matches_keras(arch, config, request):
  if config == dict(num_classes=1000):  # the module fixtures are exactly this configuration
    keras_name, flax_name = _ARCH_FIXTURES[arch]
    expected = request.getfixturevalue(keras_name).count_params()
    model = request.getfixturevalue(flax_name)[0]
  else:
    kw = dict(
      weights=None,
      include_top=config.get("include_top", True),
      classes=config["num_classes"],
      classifier_activation=None,
      input_shape=(SIZE, SIZE, 3),
    )
    if arch == "resnet50":
      expected = keras.applications.ResNet50(**kw).count_params()
      model = _abstract(lambda: ResNet50(rngs=nnx.Rngs(0), **config))
    else:
      expected = getattr(keras.applications, f"EfficientNet{arch.upper()}")(**kw).count_params()
      model = _abstract(lambda: EfficientNet(arch, rngs=nnx.Rngs(0), **config))
  assert param_count(model) == expected


# ------------------------------------------------------------------------------------ logits vs Keras


def _check_logits(keras_model, model, x, name):
  expected = keras_model(x, training=False).numpy()
  got = np.asarray(_eval_logits(model, jnp.asarray(x)))
  diff = float(np.abs(got - expected).max())
  print(f"{name}: max |logit diff| = {diff:.3g} (max |logit| {np.abs(expected).max():.3g})")
  assert got.shape == expected.shape and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5 * max(1.0, np.abs(expected).max()))
  return diff


def test_resnet50_logits_match_keras(keras_r50, flax_r50):
  model, copied = flax_r50
  assert copied == 320  # 53 conv (kernel+bias) + 53 BN x 4 + dense kernel/bias
  x = np.random.default_rng(10).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
  _check_logits(keras_r50, model, x, "ResNet50")


def test_efficientnet_b0_logits_match_keras(keras_b0, flax_b0):
  model, copied = flax_b0
  assert copied == 314
  _check_logits(keras_b0, model, _images(11, 255.0), "EfficientNetB0")


def test_efficientnet_b5_logits_match_keras(keras_b5, flax_b5):
  model, copied = flax_b5
  assert copied == 3 + 5 + 3 * 14 + 36 * 19 + 5 + 2  # Normalization, stem, 39 blocks (3 without expansion), top, head
  _check_logits(keras_b5, model, _images(12, 255.0), "EfficientNetB5")


def test_efficientnet_features_without_top(keras_b0):
  """include_top=False returns the pooled `top_activation` of the same backbone."""
  with pytest.warns(UserWarning, match="not loaded: predictions"):
    model, _ = _load(lambda: EfficientNetB0(1000, include_top=False, rngs=nnx.Rngs(0)), keras_b0, skip_top=True)
  x = _images(13, 255.0)
  pooled = keras.Model(keras_b0.input, keras_b0.get_layer("avg_pool").output)(x, training=False).numpy()
  got = np.asarray(_eval_logits(model, jnp.asarray(x)))
  assert got.shape == (2, 1280)
  np.testing.assert_allclose(got, pooled, rtol=1e-5, atol=2e-5)


# ------------------------------------------------------------------------------------- weight files


def test_load_efficientnet_from_files(keras_b0, flax_b0, tmp_path):
  reference = _state_arrays(flax_b0[0])
  keras_b0.save(tmp_path / "b0.keras")
  keras_b0.save_weights(tmp_path / "b0.weights.h5")
  keras_b0.save(tmp_path / "b0.h5")  # legacy (Keras 2) HDF5 layout, as the keras.applications downloads
  for path in ("b0.keras", "b0.weights.h5", "b0.h5"):
    model, copied = _load(lambda: EfficientNetB0(1000, rngs=nnx.Rngs(0)), str(tmp_path / path))
    assert copied == 314, path
    loaded = _state_arrays(model)
    assert loaded.keys() == reference.keys()
    for key, value in reference.items():
      np.testing.assert_array_equal(loaded[key], value, err_msg=f"{path}: {key}")


def test_load_resnet50_weights_h5_skip_top(keras_r50, flax_r50, tmp_path):
  """Keras 3 .weights.h5 files keyed by class and position only (written before Keras stored layer names)
  load through a reference model; a new 5-class head keeps its own values."""
  path = tmp_path / "r50.weights.h5"
  keras_r50.save_weights(path)
  with h5py.File(path, "r+") as f:
    for group in f["layers"].values():
      if "vars" in group and "name" in group["vars"].attrs:
        del group["vars"].attrs["name"]
  model = _abstract(lambda: ResNet50(5, rngs=nnx.Rngs(0)))
  head = model.head.dense  # an eval_shape model's skipped head needs values of its own
  head.kernel.set_value(np.full(head.kernel.get_value().shape, 0.5, np.float32))
  head.bias.set_value(np.zeros(head.bias.get_value().shape, np.float32))
  with pytest.warns(UserWarning, match="not loaded: predictions"):
    assert load_keras_weights(model, path, skip_top=True) == 318
  np.testing.assert_array_equal(np.asarray(head.kernel.get_value()), 0.5)  # head untouched
  reference = _state_arrays(flax_r50[0])
  backbone = nnx.state(model, nnx.Not(nnx.PathContains("head")))
  for p, value in jax.tree_util.tree_flatten_with_path(backbone)[0]:
    key = jax.tree_util.keystr(p)
    np.testing.assert_array_equal(np.asarray(value), reference[key], err_msg=key)
  with pytest.raises(WeightMismatchError, match="predictions/kernel"):
    load_keras_weights(model, keras_r50)


def test_mismatched_file_names_every_tensor(tmp_path):
  other = keras.applications.EfficientNetB0(
    weights=None, input_shape=(SIZE, SIZE, 1), classes=10, classifier_activation=None
  )
  other.save_weights(tmp_path / "gray10.weights.h5")
  model = _abstract(lambda: EfficientNetB0(1000, rngs=nnx.Rngs(0)))
  with pytest.raises(WeightMismatchError) as info:
    load_keras_weights(model, tmp_path / "gray10.weights.h5")
  message = str(info.value)
  # The auto-named Normalization layer is reported by its name in the file (normalization_<n> in this session).
  norm = next(layer.name for layer in other.layers if type(layer).__name__ == "Normalization")
  for name in (f"{norm}/mean", f"{norm}/variance", "stem_conv/kernel", "predictions/kernel", "predictions/bias"):
    assert name in message
  assert message.startswith("5 tensor(s)")


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


@pytest.mark.parametrize("arch", ["resnet50", "b0"])
def test_failed_load_leaves_model_unchanged(arch, request, tmp_path):
  """Sources that fail only at their last layer (every other tensor fits and differs) change nothing."""
  keras_name, flax_name = _ARCH_FIXTURES[arch]
  model = request.getfixturevalue(flax_name)[0]
  path = _shifted_weights(request.getfixturevalue(keras_name), tmp_path / "shifted.weights.h5")
  before = _state_arrays(model)
  for expected in (["predictions/kernel"], ["predictions/kernel", "predictions/bias"]):  # wrong shape, missing
    with pytest.raises(WeightMismatchError) as info:
      load_keras_weights(model, path)
    assert [line.split(":")[0].strip() for line in str(info.value).splitlines()[1:]] == expected, str(info.value)
    after = _state_arrays(model)
    assert after.keys() == before.keys()
    for key, value in before.items():
      np.testing.assert_array_equal(after[key], value, err_msg=key)
    _drop_top(path)


# ------------------------------------------------------------------------------------------- bfloat16


def test_resnet50_bfloat16_close_to_float32(keras_r50, flax_r50):
  model, _ = _load(lambda: ResNet50(1000, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), keras_r50)
  assert model.conv1.kernel[...].dtype == jnp.float32
  assert model.bn1.mean[...].dtype == jnp.float32
  x = jnp.asarray(np.random.default_rng(14).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32))
  ref = np.asarray(_eval_logits(flax_r50[0], x))
  got = np.asarray(_eval_logits(model, x))
  assert got.dtype == np.float32 and np.all(np.isfinite(got))
  rel = np.abs(got - ref).max() / np.abs(ref).max()
  print(f"ResNet50 bf16 vs fp32: max rel diff {rel:.3g}")
  assert rel < 0.1


# ------------------------------------------------------------------------------------------- SmallCNN


def test_small_cnn_shapes_and_batchnorm_modes():
  model = SmallCNN(3, rngs=nnx.Rngs(0))
  assert param_count(model) == 9 * (16 + 16 * 32 + 32 * 64) + 2 * 2 * (16 + 32 + 64) + 64 * 3 + 3
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 64, 64, 1)).astype(np.float32))
  forward = nnx.jit(lambda m, x, train: m(x, train=train), static_argnums=2)
  stats = np.asarray(model.bns[0].mean[...]).copy()
  eval_out = forward(model, x, False)
  assert eval_out.shape == (4, 3) and eval_out.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(model.bns[0].mean[...]), stats)  # eval: running averages untouched
  train_out = forward(model, x, True)
  assert not np.allclose(np.asarray(model.bns[0].mean[...]), stats)  # train: statistics updated
  assert not np.allclose(np.asarray(train_out), np.asarray(eval_out))  # batch vs running statistics
  features = forward(SmallCNN(3, include_top=False, rngs=nnx.Rngs(0)), x, False)
  assert features.shape == (4, 64)
  half = forward(SmallCNN(3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), x, False)
  assert half.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(half)))


def test_small_cnn_adam_reduces_loss():
  rng = np.random.default_rng(0)
  labels = np.arange(32) % 2
  x = rng.normal(0.0, 0.3, (32, 16, 16, 1)).astype(np.float32)
  x[labels == 1, 4:12, 4:12] += 1.0  # class 1: a bright square
  x, y = jnp.asarray(np.clip(x, -1, 1)), jnp.asarray(labels)
  model = SmallCNN(2, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):
    def loss_fn(model):
      return optax.softmax_cross_entropy_with_integer_labels(model(x, train=True), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer, x, y)) for _ in range(15)]
  assert losses[-1] < 0.5 * losses[0], losses
