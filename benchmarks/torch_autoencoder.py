"""PyTorch baseline of the DeepSMOTE encoder/decoder training step, built from the preset layer tables.

Reproduces the released DeepSMOTE training step: reconstruction MSE over a batch of B images plus the
penalty term (one class drawn at random, P images of it encoded in train mode and detached, codes and
images cyclically shifted by one, MSE of the decoded shifted codes against the shifted images), one
backward pass, two Adam optimisers (encoder, decoder; lr 2e-4). `penalty='paper'` is Algorithm 1 of the
DeepSMOTE paper instead (codes with gradient, permuted, decoded, compared with the sample in its original
order) and `penalty='none'` reconstruction only -- the three variants of `deepsmote_jax.train.autoencoder`.

It is also the checked reference of the JAX step: `load_from_jax` copies an NNX autoencoder's weights into
these modules and `params_to_jax` / `grads_to_jax` read them back in the JAX layout, so
`tests/test_torch_reference.py` can show that losses, every gradient and one Adam step agree.

Differences from the released script that do not change the numbers: the penalty codes are computed under
`torch.no_grad()` instead of a graph-building forward followed by `.detach().cpu().numpy()` and a copy
back to the device, and the image pool lives on the device (no host copies inside the step).

Modes: 'fp32' (eager, like the released code), 'bf16_cl' (autocast bfloat16 + channels_last on model and
inputs), 'compile' (torch.compile of the loss, fp32) and 'compile_bf16_cl'. A mode that fails (compiler
error, out of memory) is reported in the result's 'error' field instead of raising.

Run: `python -m benchmarks.torch_autoencoder --presets tiny_64,deepsmote_mnist --batch 8 --device cpu`.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import random
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # run as `python benchmarks/torch_autoencoder.py`: make the repo importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common
from deepsmote_jax.models.presets import AutoencoderSpec, conv_out, get_preset, validate

MODES = common.TORCH_MODES
PENALTIES = ("reference", "paper", "none")


class Encoder(nn.Module):
  """Convs (no bias), BatchNorm from the 2nd conv on, LeakyReLU(0.2), flatten, Linear -> latent."""

  def __init__(self, spec: AutoencoderSpec):
    super().__init__()
    layers: list[nn.Module] = []
    in_c, size = spec.channels, spec.image_size
    for i, c in enumerate(spec.encoder):
      layers.append(nn.Conv2d(in_c, c.features, c.kernel, c.stride, c.padding, bias=False))
      if i > 0:
        layers.append(nn.BatchNorm2d(c.features))
      layers.append(nn.LeakyReLU(0.2, inplace=True))
      in_c, size = c.features, conv_out(size, c)
    self.conv = nn.Sequential(*layers)
    self.feature_chw = (in_c, size, size)  # what `fc` flattens (C, H, W order; JAX flattens H, W, C)
    self.fc = nn.Linear(in_c * size * size, spec.latent_dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc(torch.flatten(self.conv(x), 1))


class Decoder(nn.Module):
  """Linear + ReLU to (c, h, w), ConvTranspose2d (bias) per row, BatchNorm + ReLU between, Tanh last."""

  def __init__(self, spec: AutoencoderSpec):
    super().__init__()
    h, w, c0 = spec.decoder_input
    self.input_chw = (c0, h, w)
    self.fc = nn.Sequential(nn.Linear(spec.latent_dim, h * w * c0), nn.ReLU(True))
    layers: list[nn.Module] = []
    in_c = c0
    for i, c in enumerate(spec.decoder):
      last = i == len(spec.decoder) - 1
      out_c = spec.decoder_channels if last else c.features
      layers.append(nn.ConvTranspose2d(in_c, out_c, c.kernel, c.stride, c.padding, bias=True))
      layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out_c), nn.ReLU(True)]
      in_c = out_c
    self.deconv = nn.Sequential(*layers)
    self.channels_last = False  # set by `to_channels_last`; the view after the Linear is NCHW otherwise

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    x = self.fc(z).view(-1, *self.input_chw)
    if self.channels_last:
      x = x.contiguous(memory_format=torch.channels_last)
    return self.deconv(x)


def build_torch_autoencoder(spec: AutoencoderSpec) -> tuple[Encoder, Decoder]:
  """(encoder, decoder) for `spec`: `spec.channels` in, `spec.decoder_channels` out, in train mode."""
  validate(spec)
  return Encoder(spec), Decoder(spec)


def count_params(module: nn.Module) -> int:
  """Trainable parameters (BatchNorm scale/shift included, running statistics not)."""
  return sum(p.numel() for p in module.parameters() if p.requires_grad)


def to_channels_last(encoder: Encoder, decoder: Decoder) -> None:
  """Puts both models' 4-D weights and the decoder's first feature map in channels_last layout."""
  encoder.to(memory_format=torch.channels_last)
  decoder.to(memory_format=torch.channels_last)
  decoder.channels_last = True


# --- Weights between the NNX autoencoder (deepsmote_jax.models.autoencoder) and these modules ---------------
#
# Every layout difference is handled in `_jax_layout`, once, in both directions:
# * Conv2d weight (O, I, kh, kw) <-> nnx.Conv kernel (kh, kw, I, O);
# * ConvTranspose2d weight (Cin, Cout, k, k) <-> ConvTranspose kernel (k, k, Cin, Cout) (models/layers.py);
# * Linear weight (out, in) <-> nnx.Linear kernel (in, out), where the encoder's `fc` input and the decoder's
#   `fc` output are feature maps flattened (C, H, W) here but (H, W, C) in JAX (NCHW vs NHWC), so the rows /
#   columns (and the decoder fc bias) are permuted too;
# * BatchNorm2d weight / bias / running_mean / running_var <-> BatchNorm scale / bias / mean / var.
# JAX-side trees are plain nested dicts, as `deepsmote_jax.train.loop.split_model` returns them
# (e.g. params['encoder']['convs'][0]['kernel']); values may be NumPy or JAX arrays.

_Layout = tuple[str, tuple, torch.Tensor, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _jax_layout(encoder: Encoder, decoder: Decoder) -> Iterator[_Layout]:
  """(collection, path, tensor, to_torch, to_jax) for every parameter and BatchNorm statistic.

  `collection` is 'params' or 'batch_stats'; `path` the key path in the JAX tree; `to_torch` maps the JAX
  array onto `tensor`'s layout, `to_jax` maps a tensor (or its gradient) back.
  """
  same = lambda a: a  # noqa: E731
  conv_t = lambda a: a.transpose(3, 2, 0, 1)  # noqa: E731  (kh, kw, I, O) -> (O, I, kh, kw)
  conv_j = lambda a: a.transpose(2, 3, 1, 0)  # noqa: E731
  convt = lambda a: a.transpose(2, 3, 0, 1)  # noqa: E731  (k, k, Cin, Cout) <-> (Cin, Cout, k, k)

  def norm(side: str, i: int, bn: nn.BatchNorm2d) -> Iterator[_Layout]:
    yield "params", (side, "norms", i, "scale"), bn.weight, same, same
    yield "params", (side, "norms", i, "bias"), bn.bias, same, same
    yield "batch_stats", (side, "norms", i, "mean"), bn.running_mean, same, same
    yield "batch_stats", (side, "norms", i, "var"), bn.running_var, same, same

  convs = [m for m in encoder.conv if isinstance(m, nn.Conv2d)]
  norms = [m for m in encoder.conv if isinstance(m, nn.BatchNorm2d)]
  for i, m in enumerate(convs):
    yield "params", ("encoder", "convs", i, "kernel"), m.weight, conv_t, conv_j
  for i, bn in enumerate(norms, start=1):  # BatchNorm from the 2nd convolution on
    yield from norm("encoder", i, bn)
  c, h, w = encoder.feature_chw
  n = encoder.fc.out_features
  yield (
    "params",
    ("encoder", "fc", "kernel"),
    encoder.fc.weight,
    lambda a: a.reshape(h, w, c, n).transpose(3, 2, 0, 1).reshape(n, c * h * w),
    lambda a: a.reshape(n, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, n),
  )
  yield "params", ("encoder", "fc", "bias"), encoder.fc.bias, same, same

  fc = decoder.fc[0]
  c, h, w = decoder.input_chw
  n = fc.in_features
  yield (
    "params",
    ("decoder", "fc", "kernel"),
    fc.weight,
    lambda a: a.reshape(n, h, w, c).transpose(3, 1, 2, 0).reshape(c * h * w, n),
    lambda a: a.reshape(c, h, w, n).transpose(3, 1, 2, 0).reshape(n, h * w * c),
  )
  yield (
    "params",
    ("decoder", "fc", "bias"),
    fc.bias,
    lambda a: a.reshape(h, w, c).transpose(2, 0, 1).reshape(-1),
    lambda a: a.reshape(c, h, w).transpose(1, 2, 0).reshape(-1),
  )
  deconvs = [m for m in decoder.deconv if isinstance(m, nn.ConvTranspose2d)]
  norms = [m for m in decoder.deconv if isinstance(m, nn.BatchNorm2d)]  # after every deconv but the last
  for i, m in enumerate(deconvs):
    yield "params", ("decoder", "deconvs", i, "kernel"), m.weight, convt, convt
    yield "params", ("decoder", "deconvs", i, "bias"), m.bias, same, same
  for i, bn in enumerate(norms):
    yield from norm("decoder", i, bn)


def _get(tree: Mapping, path: tuple) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _put(tree: dict, path: tuple, value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


@torch.no_grad()
def load_from_jax(
  encoder: Encoder,
  decoder: Decoder,
  model: Any = None,
  *,
  params: Mapping | None = None,
  batch_stats: Mapping | None = None,
) -> None:
  """Copies an NNX `Autoencoder`'s weights and BatchNorm statistics into `encoder` / `decoder` in place.

  Pass the model, or its `params` / `batch_stats` trees (`deepsmote_jax.train.loop.split_model`; NumPy or
  JAX arrays; the conversion itself is NumPy). Every parameter and running statistic of the torch modules
  is overwritten (a missing JAX entry is a KeyError, a shape mismatch a ValueError), so both sides then
  compute the same function. Copies keep the tensors' dtype, device and memory format.
  """
  if model is not None:
    if params is not None or batch_stats is not None:
      raise ValueError("pass either the model or its params/batch_stats, not both")
    from deepsmote_jax.train import loop  # JAX only where a model is given

    _, params, batch_stats = loop.split_model(model)
  if params is None or batch_stats is None:
    raise ValueError("need the model or both its params and batch_stats trees")
  trees = {"params": params, "batch_stats": batch_stats}
  for collection, path, tensor, to_torch, _ in _jax_layout(encoder, decoder):
    value = to_torch(np.asarray(_get(trees[collection], path), np.float32))
    if tuple(value.shape) != tuple(tensor.shape):
      raise ValueError(
        f"{collection}{list(path)}: JAX value gives shape {value.shape}, the torch tensor is "
        f"{tuple(tensor.shape)} (different spec?)"
      )
    tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def params_to_jax(encoder: Encoder, decoder: Decoder) -> tuple[dict, dict]:
  """(params, batch_stats) of the torch modules as NumPy trees in the JAX layout (inverse of `load_from_jax`)."""
  trees: dict[str, dict] = {"params": {}, "batch_stats": {}}
  for collection, path, tensor, _, to_jax in _jax_layout(encoder, decoder):
    _put(trees[collection], path, to_jax(tensor.detach().float().cpu().numpy()))
  return trees["params"], trees["batch_stats"]


def grads_to_jax(encoder: Encoder, decoder: Decoder) -> dict:
  """The parameters' `.grad` as a NumPy tree in the JAX params layout (zeros where a grad is None), so it
  compares leaf by leaf with `jax.grad` over `split_model`'s params."""
  grads: dict = {}
  for collection, path, tensor, _, to_jax in _jax_layout(encoder, decoder):
    if collection == "params":
      g = tensor.grad
      g = np.zeros(tuple(tensor.shape), np.float32) if g is None else g.detach().float().cpu().numpy()
      _put(grads, path, to_jax(g))
  return grads


def make_optimizers(
  encoder: nn.Module, decoder: nn.Module, lr: float = 2e-4, fused: bool | None = None
) -> list[torch.optim.Optimizer]:
  """The released code's two Adam optimisers (encoder, decoder)."""
  return [torch.optim.Adam(m.parameters(), lr=lr, fused=fused) for m in (encoder, decoder)]


def sample_class(pool: Sequence[torch.Tensor], size: int, rng: random.Random) -> torch.Tensor:
  """`size` images (without replacement) of one class drawn at random; `pool[k]` holds class k's images.

  The class is drawn on the host (as the released code's `np.random.choice`), the indices on the device,
  so the step never waits for the device.
  """
  xs = pool[rng.randrange(len(pool))]
  if size > xs.shape[0]:
    raise ValueError(f"penalty sample of {size} images from a class of {xs.shape[0]}")
  return xs[torch.randperm(xs.shape[0], device=xs.device)[:size]]


def cyclic_perm(size: int, shift: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
  """Indices (j + shift) % size: `t[cyclic_perm(P, s)]` is `torch.roll(t, -s, 0)` (new[j] = old[j + s]).

  The same permutation as `deepsmote_jax.train.autoencoder.cyclic_shift(P, P, s)` for a full sample.
  """
  return (torch.arange(size, device=device) + shift) % size


def _permute(t: torch.Tensor, perm: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
  # None: the released code's shift by one (xcplus = [1, 2, ..., P-1, 0]).
  return torch.roll(t, -1, 0) if perm is None else t[perm]


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
  """MSE with the target broadcast to the prediction's channels (a 1-channel image against a 3-channel
  reconstruction, as the paper's Fig. 3 model), what F.mse_loss does with a broadcasting warning."""
  return F.mse_loss(pred, target.expand_as(pred))


def deepsmote_loss(
  encoder: nn.Module,
  decoder: nn.Module,
  x: torch.Tensor,
  x_class: torch.Tensor | None = None,
  *,
  reconstruction: bool = True,
  penalty: str = "reference",
  perm: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
  """MSE(decoder(encoder(x)), x) + the DeepSMOTE penalty on `x_class` (P images of one class).

  `penalty` (the models run in train mode throughout, as the JAX step does):
  * 'reference' (the released code): codes of `x_class` detached; codes and images permuted alike by
    `perm` (default: shifted by one, new[j] = old[j + 1]); MSE(decoder(codes[perm]), x_class[perm]).
    No gradient reaches the encoder through this term.
  * 'paper' (Algorithm 1 of the paper): codes WITH gradient, permuted, decoded and compared with the
    sample in its original order: MSE(decoder(codes[perm]), x_class). A real step draws `perm` as a
    cyclic shift by 1..P-1 (`cyclic_perm`); the default is the shift by one.
  * 'none': reconstruction only (`x_class` unused).
  `reconstruction=False` drops the first term (the tests use it to look at the penalty's gradients alone).
  """
  if penalty not in PENALTIES:
    raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
  if not reconstruction and penalty == "none":
    raise ValueError("reconstruction=False with penalty='none' leaves no loss")
  loss = _mse(decoder(encoder(x)), x) if reconstruction else None
  if penalty == "none":
    return loss
  if x_class is None:
    raise ValueError(f"penalty={penalty!r} needs the class sample x_class")
  if penalty == "reference":
    with torch.no_grad():  # the released code: encoder(xclass).detach() (train mode: BN statistics update)
      codes = encoder(x_class)
    pen = _mse(decoder(_permute(codes, perm)), _permute(x_class, perm))
  else:
    pen = _mse(decoder(_permute(encoder(x_class), perm)), x_class)
  return pen if loss is None else loss + pen


def train_step(
  encoder: nn.Module,
  decoder: nn.Module,
  optimizers: Sequence[torch.optim.Optimizer],
  x: torch.Tensor,
  x_class: torch.Tensor | None,
  *,
  reconstruction: bool = True,
  amp_dtype: torch.dtype | None = None,
  loss_fn: Callable[..., torch.Tensor] | None = None,
  penalty: str = "reference",
  perm: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
  """One DeepSMOTE step (zero grads, loss, backward, both Adam steps); returns the detached loss.

  `penalty` and `perm` as in `deepsmote_loss`. `amp_dtype` (e.g. torch.bfloat16) runs the forward under
  autocast; `loss_fn(x, x_class)` -- `loss_fn(x, x_class, perm)` when `perm` is given -- replaces
  `deepsmote_loss` (e.g. a torch.compile'd closure over the models and the penalty).
  """
  for opt in optimizers:
    opt.zero_grad(set_to_none=True)
  with common.torch_autocast(x.device, amp_dtype):
    if loss_fn is not None:
      loss = loss_fn(x, x_class) if perm is None else loss_fn(x, x_class, perm)
    else:
      loss = deepsmote_loss(encoder, decoder, x, x_class, reconstruction=reconstruction, penalty=penalty, perm=perm)
  loss.backward()
  for opt in optimizers:
    opt.step()
  return loss.detach()


def time_torch_step(
  spec: AutoencoderSpec,
  batch_size: int,
  *,
  mode: str = "fp32",
  device: str | torch.device | None = "auto",
  steps: int = 10,
  warmup: int = 3,
  chunk: int = 1,
  penalty_size: int | None = None,
  num_classes: int = 2,
  lr: float = 2e-4,
  fused_adam: bool = False,
  cudnn_benchmark: bool = True,
  num_threads: int | None = None,
  seed: int = 0,
  penalty: str = "reference",
) -> dict[str, Any]:
  """Times the PyTorch DeepSMOTE step; returns a JSON-able dict (img/s counts B + P images per step).

  `penalty` as in `deepsmote_loss` ('paper' draws a cyclic shift by 1..P-1 per step on the host, as the JAX
  step draws one per step; 'none' counts B images per step).

  `steps` timed samples of `chunk` steps each (synchronised after each sample), `warmup` steps excluded;
  'step_s' is the median seconds per step. Inputs are uniform in [-1, 1]. Errors (compile failures, out
  of memory) are returned in 'error' with no timing. `num_threads` sets torch's intra-op CPU threads for
  this call (on a shared CPU, 1 avoids OpenMP barrier stalls).
  """
  dev, amp_dtype, mode_fields = common.torch_mode(mode, device)
  if penalty not in PENALTIES:
    raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
  p = batch_size if penalty_size is None else penalty_size
  if penalty == "none":
    p = 0
  result: dict[str, Any] = {
    "implementation": "pytorch",
    "preset": spec.name,
    "image_size": spec.image_size,
    "channels": spec.channels,
    "latent_dim": spec.latent_dim,
    "batch_size": batch_size,
    "penalty": penalty,
    "penalty_size": p,
    **mode_fields,
    "fused_adam": fused_adam,
    "steps": steps,
    "chunk": chunk,
    "warmup": warmup,
    "torch": torch.__version__,
  }
  if dev.type == "cuda":
    torch.backends.cudnn.benchmark = cudnn_benchmark
    result.update(
      cudnn_benchmark=cudnn_benchmark,
      cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
      matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
    )
  with common.torch_case(result, dev, num_threads):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    encoder, decoder = build_torch_autoencoder(spec)
    result.update(params_encoder=count_params(encoder), params_decoder=count_params(decoder))
    encoder.to(dev).train()
    decoder.to(dev).train()
    fmt = torch.channels_last if result["channels_last"] else torch.contiguous_format
    if result["channels_last"]:
      to_channels_last(encoder, decoder)
    optimizers = make_optimizers(encoder, decoder, lr, fused=fused_adam or None)

    shape = (spec.channels, spec.image_size, spec.image_size)
    rand = lambda n: torch.empty((n, *shape), device=dev).uniform_(-1.0, 1.0).contiguous(memory_format=fmt)
    x = rand(batch_size)
    pool = [rand(2 * p) for _ in range(num_classes)]  # each class holds 2P images

    if penalty == "paper" and p < 2:
      raise ValueError(f"the paper penalty needs a class sample of >= 2 images, got {p}")
    # 'paper': one device-resident permutation per shift 1..P-1, one drawn per step.
    perms = [cyclic_perm(p, s, dev) for s in range(1, p)] if penalty == "paper" else []

    loss_fn = None
    if result["compiled"]:
      loss_fn = torch.compile(
        lambda xb, xc, pm=None: deepsmote_loss(encoder, decoder, xb, xc, penalty=penalty, perm=pm)
      )

    def step() -> torch.Tensor:
      x_class = sample_class(pool, p, rng) if penalty != "none" else None
      perm = perms[rng.randrange(len(perms))] if perms else None
      return train_step(
        encoder, decoder, optimizers, x, x_class, amp_dtype=amp_dtype, loss_fn=loss_fn, penalty=penalty, perm=perm
      )

    timing = common.time_torch_steps(step, dev, warmup=warmup, steps=steps, chunk=chunk)
    result.update(timing, img_per_s=(batch_size + p) / timing["step_s"], loss_finite=math.isfinite(timing["loss"]))
  return result


TABLE_COLUMNS = ("preset", "batch_size", "mode", "device_name", "step_ms", "img_per_s", "loss", "error")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", default="tiny_64", help="comma-separated preset names")
  parser.add_argument("--batch", default="8", help="comma-separated batch sizes B (penalty P = B)")
  parser.add_argument("--modes", default="fp32,bf16_cl", help=f"comma-separated, of {','.join(MODES)}")
  parser.add_argument("--channels", type=int, default=None, help="override the presets' channels")
  parser.add_argument("--device", default="auto")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--chunk", type=int, default=1)
  parser.add_argument("--fused-adam", action="store_true")
  parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads")
  parser.add_argument("--json", default=None, help="write machine info + results here")
  args = parser.parse_args(argv)

  results = []
  timing = dict(device=args.device, steps=args.steps, warmup=args.warmup, num_threads=args.threads)
  for name in args.presets.split(","):
    spec = get_preset(name, **({"channels": args.channels} if args.channels else {}))
    for b in (int(s) for s in args.batch.split(",")):
      for mode in args.modes.split(","):
        r = time_torch_step(spec, b, mode=mode, chunk=args.chunk, fused_adam=args.fused_adam, **timing)
        results.append(r)
        print(
          f"{name} B={b} {mode}: " + (f"{r['img_per_s']:,.0f} img/s" if "error" not in r else r["error"]), flush=True
        )
  if args.json:
    common.write_json(args.json, {"machine": common.machine_info(), "results": results})
  print()
  common.print_table(common.step_ms_rows(results), TABLE_COLUMNS)
  return results


if __name__ == "__main__":
  main()
