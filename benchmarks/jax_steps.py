"""Timing the project's compiled multi-step training call (shared by the autoencoder and classifier benchmarks).

The call is compiled ahead of time (`lower().compile()`), so compile time is reported apart and XLA's memory
accounting of that executable gives the device memory of the row.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks import common
from deepsmote_jax.train import loop


def compile_multistep(setup, *, seed: int):
  """`setup.compiled` compiled ahead of time for its first call: (call, compile seconds, executable), where
  `call()` runs one multi-step call on the state the previous call left (the state is donated) and returns
  its metrics."""
  k, mesh = setup.cfg.steps_per_call, setup.mesh
  batches = loop.place_batches(setup.plan(0, k), mesh, k)
  key = jax.random.key(seed)
  state = loop.place_state(setup.state, mesh)
  t0 = time.perf_counter()
  executable = setup.compiled.lower(state, batches, key, setup.data).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def call():
    holder["state"], m = executable(holder["state"], batches, key, setup.data)
    return m

  return call, compile_s, executable


def time_multistep(setup, *, seed: int, repeats: int) -> dict:
  """Median seconds per step of `setup.compiled` (an AETraining / ClassifierTraining), with its metrics."""
  k, mesh = setup.cfg.steps_per_call, setup.mesh
  call, compile_s, executable = compile_multistep(setup, seed=seed)

  times = common.time_calls(call, warmup=1, repeats=repeats, sync=jax.block_until_ready)
  metrics, _ = jax.device_get(call())
  return {
    "step_s": float(np.median(times)) / k,
    "compile_s": compile_s,
    "steps_per_call": k,
    "devices": int(mesh.devices.size),
    "peak_mib": common.jax_compiled_memory(executable).get("peak_mib"),
    "device_peak_mib": common.jax_device_peak_mib(),
    "metrics": {name: float(np.mean(v)) for name, v in metrics.items()},
  }
