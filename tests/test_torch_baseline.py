"""The PyTorch DeepSMOTE baseline in benchmarks/: parameter counts, shapes, the step, the detached penalty."""

from __future__ import annotations

import copy
import json
import math
import pathlib
import random
import sys

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks import torch_autoencoder as ta  # noqa: E402
from deepsmote_jax.models.presets import PRESETS, decoder_shapes, encoder_shapes, get_preset  # noqa: E402

# One xdist worker runs this module (`--dist loadgroup`), so its module-scoped fixture is built once.
pytestmark = pytest.mark.xdist_group("torch_baseline")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
  """One intra-op thread: the shapes here are tiny and the CPU is shared (OpenMP barriers stall badly)."""
  n = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(n)


@pytest.mark.parametrize(
  "name, enc_channels, dec_channels, n_enc, n_dec",
  [
    ("amoled_dent_200", 1, 3, 2_759_264, 2_988_395),  # AMOLED paper Fig. 3
    ("amoled_scratch_396", 1, 1, 11_030_112, 11_029_097),  # AMOLED paper Fig. 5
  ],
)
def test_param_counts_match_paper(name, enc_channels, dec_channels, n_enc, n_dec):
  spec = get_preset(name)
  encoder = ta.Encoder(spec.replace(channels=enc_channels))
  decoder = ta.Decoder(spec.replace(channels=dec_channels))
  assert ta.count_params(encoder) == n_enc
  assert ta.count_params(decoder) == n_dec


def test_fig3_in_one_model():
  encoder, decoder = ta.build_torch_autoencoder(get_preset("amoled_dent_200", channels=1, out_channels=3))
  assert ta.count_params(encoder) == 2_759_264 and ta.count_params(decoder) == 2_988_395


def _record_shapes(module, kind):
  shapes, hooks = [], []
  for m in module.modules():
    if type(m) is kind:
      hooks.append(m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:]))))
  return shapes, hooks


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shapes_follow_table(name):
  spec = PRESETS[name]
  batch = 1 if spec.image_size > 300 else 2
  encoder, decoder = ta.build_torch_autoencoder(spec)
  encoder.eval(), decoder.eval()  # batch 1 with a 1x1 map: BatchNorm needs eval mode
  enc_shapes, h1 = _record_shapes(encoder, torch.nn.Conv2d)
  dec_shapes, h2 = _record_shapes(decoder, torch.nn.ConvTranspose2d)
  x = torch.empty(batch, spec.channels, spec.image_size, spec.image_size).uniform_(-1, 1)
  with torch.no_grad():
    z = encoder(x)
    y = decoder(z)
  for h in h1 + h2:
    h.remove()
  assert z.shape == (batch, spec.latent_dim)
  assert y.shape == x.shape
  assert enc_shapes == [(c, h, w) for h, w, c in encoder_shapes(spec)]
  assert dec_shapes == [(c, h, w) for h, w, c in decoder_shapes(spec)]
  assert float(y.abs().max()) <= 1.0  # Tanh


def _tiny(batch=4, seed=0):
  torch.manual_seed(seed)
  spec = get_preset("tiny_64")
  encoder, decoder = ta.build_torch_autoencoder(spec)
  shape = (batch, spec.channels, spec.image_size, spec.image_size)
  x = torch.empty(shape).uniform_(-1, 1)
  x_class = torch.empty(shape).uniform_(-1, 1)
  return spec, encoder, decoder, x, x_class


def test_train_step_tiny_runs_and_updates():
  _, encoder, decoder, x, x_class = _tiny()
  optimizers = ta.make_optimizers(encoder, decoder)
  before = [p.detach().clone() for p in list(encoder.parameters()) + list(decoder.parameters())]
  loss = ta.train_step(encoder, decoder, optimizers, x, x_class)
  assert loss.ndim == 0 and math.isfinite(float(loss))
  after = list(encoder.parameters()) + list(decoder.parameters())
  assert all(not torch.equal(b, a) for b, a in zip(before, after))


def test_penalty_is_detached_from_encoder():
  _, encoder, decoder, x, x_class = _tiny()
  ta.deepsmote_loss(encoder, decoder, x, x_class, reconstruction=False).backward()
  assert all(p.grad is None or not p.grad.any() for p in encoder.parameters())
  assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())
  ta.deepsmote_loss(encoder, decoder, x, x_class, reconstruction=True).backward()
  assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
  # Through train_step too (grads are set to None first, so what is left is this step's).
  optimizers = ta.make_optimizers(encoder, decoder)
  ta.train_step(encoder, decoder, optimizers, x, x_class, reconstruction=False)
  assert all(p.grad is None or not p.grad.any() for p in encoder.parameters())


def test_penalty_shifts_codes_and_images_by_one():
  _, encoder, decoder, x, x_class = _tiny()
  enc2, dec2 = copy.deepcopy(encoder), copy.deepcopy(decoder)
  got = ta.deepsmote_loss(encoder, decoder, x, x_class, reconstruction=False)
  plus = list(range(1, len(x_class))) + [0]  # the released code's xcplus
  with torch.no_grad():
    codes = enc2(x_class)[plus]
    want = torch.nn.functional.mse_loss(dec2(codes), x_class[plus])
  torch.testing.assert_close(got.detach(), want)


def test_sample_class_draws_one_class_without_replacement():
  pool = [torch.full((6, 1, 2, 2), float(k)) + torch.arange(6.0).view(6, 1, 1, 1) / 10 for k in range(3)]
  xs = ta.sample_class(pool, 4, random.Random(0))
  assert xs.shape == (4, 1, 2, 2)
  assert len(set(xs[:, 0, 0, 0].floor().tolist())) == 1
  assert len(set(xs[:, 0, 0, 0].tolist())) == 4
  with pytest.raises(ValueError):
    ta.sample_class(pool, 7, random.Random(0))


@pytest.mark.parametrize("mode", ["fp32", "bf16_cl"])
def test_time_torch_step_tiny_cpu(mode):
  r = ta.time_torch_step(get_preset("tiny_64"), 4, mode=mode, device="cpu", steps=2, warmup=0)
  assert "error" not in r, r.get("error")
  assert r["img_per_s"] > 0 and r["step_s"] > 0
  assert r["img_per_s"] == pytest.approx(8 / r["step_s"])
  assert r["loss_finite"]
  json.dumps(r)


def test_time_torch_step_rejects_unknown_mode():
  with pytest.raises(ValueError, match="mode"):
    ta.time_torch_step(get_preset("tiny_64"), 4, mode="fp16", device="cpu")


def test_time_torch_step_reports_errors_instead_of_raising():
  r = ta.time_torch_step(
    get_preset("tiny_64"), 4, mode="fp32", device="cpu", penalty_size=4, steps=1, warmup=0, num_classes=0
  )  # no class to draw from -> error in the result
  assert "error" in r and "step_s" not in r


def test_classifier_module_imports_cleanly():
  from benchmarks import torch_classifier as tc

  tv, why = tc._torchvision()
  if tv is None:  # not installed here: a clean report, no exception
    r = tc.time_torch_classifier("resnet50", 2, device="cpu")
    assert r["error"] == why and why.startswith("torchvision not")
    return
  r = tc.time_torch_classifier("resnet50", 2, image_size=64, num_classes=10, device="cpu", steps=1, warmup=0)
  assert "error" not in r, r.get("error")
  assert r["img_per_s"] > 0 and math.isfinite(r["loss"])


def test_common_helpers(tmp_path):
  calls = []
  times = common.time_calls(
    lambda: calls.append(1), warmup=2, repeats=3, inner=2, sync=lambda out: calls.append("sync")
  )
  assert len(times) == 3 and all(t >= 0 for t in times)
  assert calls.count(1) == 2 + 3 * 2 and calls.count("sync") == 1 + 3
  assert common.median_time(lambda: None, warmup=0, repeats=3) >= 0
  info = common.machine_info()
  assert info["cpu_count"] >= 1 and info["torch"] == torch.__version__
  path = common.write_json(tmp_path / "a" / "r.json", {"info": info, "x": 1.5, "p": tmp_path})
  assert json.loads(path.read_text())["x"] == 1.5
  table = common.format_table([{"a": 1234567, "b": 0.5}, {"a": None, "b": "xyz"}], ["a", "b"])
  lines = table.splitlines()
  assert lines[0].split() == ["a", "b"] and "1,234,567" in lines[2] and "-" in lines[3].split()[0]


def test_common_torch_mode_and_step_ms_rows():
  dev, amp, fields = common.torch_mode("bf16_cl", "cpu")
  assert dev == torch.device("cpu") and amp == torch.bfloat16
  assert fields == {
    "mode": "bf16_cl",
    "device": "cpu",
    "device_name": "cpu",
    "compute_dtype": "bfloat16 autocast",
    "channels_last": True,
    "compiled": False,
  }
  assert common.torch_mode("compile", "auto")[2]["compiled"] and common.torch_mode("fp32", "cpu")[1] is None
  with pytest.raises(ValueError, match="mode must be one of"):
    common.torch_mode("fp16", "cpu")
  assert common.step_ms_rows([{"step_s": 0.5}, {"error": "x"}]) == [
    {"step_s": 0.5, "step_ms": 500.0},
    {"error": "x", "step_ms": None},
  ]


def test_common_step_benchmark_rows():
  assert common.torch_row({"step_s": 1.0, "peak_mem_gib": 2.0}, ("step_s", "error")) == {
    "step_s": 1.0,
    "error": None,
    "peak_mib": 2048.0,
  }
  rows = [
    {"impl": "jax float32", "model": "m", "batch": 8, "img_per_s": 300.0},
    {"impl": "jax float32", "model": "m", "batch": 16, "img_per_s": 300.0},  # no torch row of its batch
    {"impl": "jax bfloat16", "model": "m", "batch": 8, "error": "oom"},
    {"impl": "torchvision fp32", "model": "m", "batch": 8, "img_per_s": 100.0},
    {"impl": "torchvision bf16_cl", "model": "m", "batch": 8, "img_per_s": 150.0},
    {"impl": "torch", "model": "m", "batch": 16, "error": "torch not importable"},
  ]
  common.add_speedups(rows, ("model", "batch"))
  assert [r.get("vs_best_torch") for r in rows] == [2.0, None, None, None, None, None]
