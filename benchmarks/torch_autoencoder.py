"""PyTorch baseline of the DeepSMOTE encoder/decoder training step, built from the preset layer tables.

Reproduces the released DeepSMOTE training step: reconstruction MSE over a batch of B images plus the
penalty term (one class drawn at random, P images of it encoded in train mode and detached, codes and
images cyclically shifted by one, MSE of the decoded shifted codes against the shifted images), one
backward pass, two Adam optimisers (encoder, decoder; lr 2e-4).

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
import contextlib
import math
import pathlib
import random
import statistics
import sys
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # run as `python benchmarks/torch_autoencoder.py`: make the repo importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from deepsmote_jax.models.presets import (AutoencoderSpec, conv_out, decoder_shapes, get_preset,
                                          validate)

from benchmarks import common

MODES = ("fp32", "bf16_cl", "compile", "compile_bf16_cl")


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
      out_c = spec.channels if last else c.features
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
  """(encoder, decoder) for `spec`, both with `spec.channels` image channels, in train mode."""
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


def make_optimizers(encoder: nn.Module, decoder: nn.Module, lr: float = 2e-4,
                    fused: bool | None = None) -> list[torch.optim.Optimizer]:
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


def deepsmote_loss(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, x_class: torch.Tensor,
                   *, reconstruction: bool = True) -> torch.Tensor:
  """MSE(decoder(encoder(x)), x) + penalty on `x_class` (one class; codes detached, shifted j -> j+1).

  `reconstruction=False` drops the first term (used by the tests to check the penalty gives the encoder
  no gradient).
  """
  loss = F.mse_loss(decoder(encoder(x)), x) if reconstruction else None
  with torch.no_grad():  # the released code: encoder(xclass).detach() (train mode: BN statistics update)
    codes = encoder(x_class)
  # Released code: xcplus = [1, 2, ..., P-1, 0]; new[j] = old[j + 1 mod P] for codes and images alike.
  codes, target = torch.roll(codes, -1, 0), torch.roll(x_class, -1, 0)
  penalty = F.mse_loss(decoder(codes), target)
  return penalty if loss is None else loss + penalty


def _autocast(device: torch.device | str, dtype: torch.dtype | None):
  if dtype is None:
    return contextlib.nullcontext()
  return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def train_step(encoder: nn.Module, decoder: nn.Module, optimizers: Sequence[torch.optim.Optimizer],
               x: torch.Tensor, x_class: torch.Tensor, *, reconstruction: bool = True,
               amp_dtype: torch.dtype | None = None,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
  """One DeepSMOTE step (zero grads, loss, backward, both Adam steps); returns the detached loss.

  `amp_dtype` (e.g. torch.bfloat16) runs the forward under autocast; `loss_fn(x, x_class)` replaces
  `deepsmote_loss` (e.g. a torch.compile'd closure over the models).
  """
  for opt in optimizers:
    opt.zero_grad(set_to_none=True)
  with _autocast(x.device, amp_dtype):
    if loss_fn is not None:
      loss = loss_fn(x, x_class)
    else:
      loss = deepsmote_loss(encoder, decoder, x, x_class, reconstruction=reconstruction)
  loss.backward()
  for opt in optimizers:
    opt.step()
  return loss.detach()


def _resolve_device(device: str | torch.device | None) -> torch.device:
  if device in (None, "auto"):
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
  return torch.device(device)


def time_torch_step(spec: AutoencoderSpec, batch_size: int, *, mode: str = "fp32",
                    device: str | torch.device | None = "auto", steps: int = 10, warmup: int = 3,
                    chunk: int = 1, penalty_size: int | None = None, num_classes: int = 2,
                    lr: float = 2e-4, fused_adam: bool = False, cudnn_benchmark: bool = True,
                    num_threads: int | None = None, seed: int = 0) -> dict[str, Any]:
  """Times the PyTorch DeepSMOTE step; returns a JSON-able dict (img/s counts B + P images per step).

  `steps` timed samples of `chunk` steps each (synchronised after each sample), `warmup` steps excluded;
  'step_s' is the median seconds per step. Inputs are uniform in [-1, 1]. Errors (compile failures, out
  of memory) are returned in 'error' with no timing. `num_threads` sets torch's intra-op CPU threads for
  this call (on a shared CPU, 1 avoids OpenMP barrier stalls).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  dev = _resolve_device(device)
  p = batch_size if penalty_size is None else penalty_size
  channels_last = mode.endswith("_cl")
  amp_dtype = torch.bfloat16 if "bf16" in mode else None
  result: dict[str, Any] = {
      "implementation": "pytorch", "preset": spec.name, "image_size": spec.image_size,
      "channels": spec.channels, "latent_dim": spec.latent_dim, "batch_size": batch_size,
      "penalty_size": p, "mode": mode, "device": str(dev),
      "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
      "compute_dtype": "bfloat16 autocast" if amp_dtype else "float32",
      "channels_last": channels_last, "compiled": mode.startswith("compile"), "fused_adam": fused_adam,
      "steps": steps, "chunk": chunk, "warmup": warmup, "torch": torch.__version__,
  }
  if dev.type == "cuda":
    torch.backends.cudnn.benchmark = cudnn_benchmark
    result.update(cudnn_benchmark=cudnn_benchmark, cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                  matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
  threads_before = torch.get_num_threads()
  if num_threads:
    torch.set_num_threads(num_threads)
  if dev.type == "cpu":
    result["num_threads"] = torch.get_num_threads()
  try:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    encoder, decoder = build_torch_autoencoder(spec)
    result.update(params_encoder=count_params(encoder), params_decoder=count_params(decoder))
    encoder.to(dev).train()
    decoder.to(dev).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
      to_channels_last(encoder, decoder)
    optimizers = make_optimizers(encoder, decoder, lr, fused=fused_adam or None)

    shape = (spec.channels, spec.image_size, spec.image_size)
    rand = lambda n: torch.empty((n, *shape), device=dev).uniform_(-1.0, 1.0).contiguous(memory_format=fmt)
    x = rand(batch_size)
    pool = [rand(2 * p) for _ in range(num_classes)]  # each class holds 2P images

    loss_fn = None
    if result["compiled"]:
      loss_fn = torch.compile(lambda xb, xc: deepsmote_loss(encoder, decoder, xb, xc))

    def step() -> torch.Tensor:
      return train_step(encoder, decoder, optimizers, x, sample_class(pool, p, rng),
                        amp_dtype=amp_dtype, loss_fn=loss_fn)

    sync = (lambda _: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
    if dev.type == "cuda":
      torch.cuda.reset_peak_memory_stats(dev)
    last: list[torch.Tensor] = [torch.zeros(())]

    def run() -> torch.Tensor:
      last[0] = step()
      return last[0]

    times = common.time_calls(run, warmup=warmup, repeats=steps, inner=chunk, sync=sync)
    step_s = statistics.median(times)
    loss = float(last[0])
    result.update(step_s=step_s, step_s_min=min(times), step_s_max=max(times),
                  img_per_s=(batch_size + p) / step_s, loss=loss, loss_finite=math.isfinite(loss))
    if dev.type == "cuda":
      result["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
  except Exception as e:  # noqa: BLE001 - a failing mode is a result, not a crash
    result["error"] = common.error_message(e)
  finally:
    torch.set_num_threads(threads_before)
    if dev.type == "cuda":
      torch.cuda.empty_cache()
  return result


TABLE_COLUMNS = ("preset", "batch_size", "mode", "device_name", "step_ms", "img_per_s", "loss", "error")


def table_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Rows for `common.print_table` (step time in ms)."""
  return [dict(r, step_ms=r["step_s"] * 1e3 if "step_s" in r else None) for r in results]


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
  for name in args.presets.split(","):
    spec = get_preset(name, **({"channels": args.channels} if args.channels else {}))
    for b in (int(s) for s in args.batch.split(",")):
      for mode in args.modes.split(","):
        r = time_torch_step(spec, b, mode=mode, device=args.device, steps=args.steps, warmup=args.warmup,
                            chunk=args.chunk, fused_adam=args.fused_adam, num_threads=args.threads)
        results.append(r)
        print(f"{name} B={b} {mode}: " + (f"{r['img_per_s']:,.0f} img/s" if "error" not in r else r["error"]),
              flush=True)
  if args.json:
    common.write_json(args.json, {"machine": common.machine_info(), "results": results})
  print()
  common.print_table(table_rows(results), TABLE_COLUMNS)
  return results


if __name__ == "__main__":
  main()
