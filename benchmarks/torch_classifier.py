"""PyTorch baseline of a classifier training step: torchvision InceptionV3 (with aux logits) and ResNet50.

Modes as in `torch_autoencoder`: 'fp32' (eager), 'bf16_cl' (autocast bfloat16 + channels_last),
'compile' and 'compile_bf16_cl' (torch.compile of the loss; failures are reported, not raised).
torchvision is imported lazily: without it every result is `{'error': 'torchvision not installed', ...}`
(or 'torchvision not importable: ...' for a broken install).

Run: `python -m benchmarks.torch_classifier --archs inception_v3,resnet50 --batch 64 --device cuda`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # run as `python benchmarks/torch_classifier.py`
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common

ARCHS = {"inception_v3": 299, "resnet50": 224}  # default (square) input size
MODES = common.TORCH_MODES
AUX_WEIGHT = 0.4  # torchvision's reference recipe for InceptionV3's auxiliary head


def _torchvision():
  """(torchvision or None, why not): a missing or broken install (e.g. a _C built for another torch) is reported."""
  try:
    import torchvision
  except ImportError:
    return None, "torchvision not installed"
  except Exception as e:  # noqa: BLE001 - a mismatched build raises RuntimeError/OSError at import
    return None, f"torchvision not importable: {type(e).__name__}: {e}"[:300]
  return torchvision, None


def build_classifier(arch: str, num_classes: int = 1000) -> nn.Module:
  """A randomly initialised torchvision model (InceptionV3: aux_logits=True, init_weights=False)."""
  tv, why = _torchvision()
  if tv is None:
    raise ImportError(why)
  if arch == "inception_v3":
    return tv.models.inception_v3(weights=None, aux_logits=True, init_weights=False, num_classes=num_classes)
  if arch == "resnet50":
    return tv.models.resnet50(weights=None, num_classes=num_classes)
  raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")


def classifier_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
  """Cross-entropy; for InceptionV3 in train mode, + AUX_WEIGHT * the auxiliary head's cross-entropy."""
  out = model(x)
  if hasattr(out, "aux_logits"):
    loss = F.cross_entropy(out.logits, y)
    return loss + AUX_WEIGHT * F.cross_entropy(out.aux_logits, y) if out.aux_logits is not None else loss
  return F.cross_entropy(out, y)


def make_optimizer(model: nn.Module, name: str = "sgd", lr: float | None = None) -> torch.optim.Optimizer:
  """SGD (momentum 0.9, lr 0.1 by default) or Adam (lr 1e-3 by default)."""
  if name == "sgd":
    return torch.optim.SGD(model.parameters(), lr=0.1 if lr is None else lr, momentum=0.9)
  if name == "adam":
    return torch.optim.Adam(model.parameters(), lr=1e-3 if lr is None else lr)
  raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def time_torch_classifier(
  arch: str,
  batch_size: int,
  *,
  mode: str = "fp32",
  device: str | torch.device | None = "auto",
  image_size: int | None = None,
  num_classes: int = 1000,
  optimizer: str = "sgd",
  steps: int = 10,
  warmup: int = 3,
  chunk: int = 1,
  cudnn_benchmark: bool = True,
  num_threads: int | None = None,
  seed: int = 0,
) -> dict[str, Any]:
  """Times one training step (forward, loss, backward, optimiser step); returns a JSON-able dict.

  'step_s' is the median seconds per step over `steps` samples of `chunk` steps, `warmup` excluded;
  'img_per_s' = batch_size / step_s. Inputs are uniform in [-1, 1], labels uniform over the classes.
  """
  dev, amp_dtype, mode_fields = common.torch_mode(mode, device)
  if arch not in ARCHS:
    raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
  size = image_size or ARCHS[arch]
  result: dict[str, Any] = {
    "implementation": "torchvision",
    "arch": arch,
    "image_size": size,
    "batch_size": batch_size,
    "num_classes": num_classes,
    "optimizer": optimizer,
    **mode_fields,
    "steps": steps,
    "chunk": chunk,
    "warmup": warmup,
    "torch": torch.__version__,
  }
  if arch == "inception_v3":
    result["aux_weight"] = AUX_WEIGHT
  tv, why = _torchvision()
  if tv is None:
    result["error"] = why
    return result
  result["torchvision"] = tv.__version__
  if dev.type == "cuda":
    torch.backends.cudnn.benchmark = cudnn_benchmark
    result["cudnn_benchmark"] = cudnn_benchmark
  with common.torch_case(result, dev, num_threads):
    torch.manual_seed(seed)
    model = build_classifier(arch, num_classes).to(dev).train()
    result["params"] = sum(p.numel() for p in model.parameters())
    fmt = torch.channels_last if result["channels_last"] else torch.contiguous_format
    if result["channels_last"]:
      model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, optimizer)
    x = torch.empty(batch_size, 3, size, size, device=dev).uniform_(-1.0, 1.0).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch_size,), device=dev)
    loss_fn = lambda xb, yb: classifier_loss(model, xb, yb)
    if result["compiled"]:
      loss_fn = torch.compile(loss_fn)

    def step() -> torch.Tensor:
      opt.zero_grad(set_to_none=True)
      with common.torch_autocast(dev, amp_dtype):
        loss = loss_fn(x, y)
      loss.backward()
      opt.step()
      return loss.detach()

    timing = common.time_torch_steps(step, dev, warmup=warmup, steps=steps, chunk=chunk)
    result.update(timing, img_per_s=batch_size / timing["step_s"])
  return result


TABLE_COLUMNS = ("arch", "image_size", "batch_size", "mode", "device_name", "step_ms", "img_per_s", "error")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--archs", default="inception_v3,resnet50")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--image-size", type=int, default=None, help="default: 299 (InceptionV3), 224 (ResNet50)")
  parser.add_argument("--modes", default="fp32,bf16_cl", help=f"comma-separated, of {','.join(MODES)}")
  parser.add_argument("--num-classes", type=int, default=1000)
  parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
  parser.add_argument("--device", default="auto")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads")
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  results = []
  model = dict(image_size=args.image_size, num_classes=args.num_classes, optimizer=args.optimizer)
  timing = dict(device=args.device, steps=args.steps, warmup=args.warmup, num_threads=args.threads)
  for arch in args.archs.split(","):
    for mode in args.modes.split(","):
      r = time_torch_classifier(arch, args.batch, mode=mode, **model, **timing)
      results.append(r)
  if args.json:
    common.write_json(args.json, {"machine": common.machine_info(), "results": results})
  common.print_table(common.step_ms_rows(results), TABLE_COLUMNS)
  return results


if __name__ == "__main__":
  main()
