"""The training machinery shared by the autoencoder and the classifiers.

* `TrainState`: an explicit pytree (step, params, batch_stats, opt_state) -- no objects in the hot loop.
  Models are NNX modules split once into (graphdef, params, batch_stats); step functions merge them inside
  the jitted function, so Python runs once per compiled call, not once per step.
* `compile_steps`: `lax.scan` of a pure `step_fn` over K stacked batches, jitted over the device mesh
  with explicit shardings (state replicated, batches split on the 'data' axis) and the state donated.
* `run`: the host loop -- batches in, progress bar (loss, images/s), JSON-lines metrics, periodic
  asynchronous Orbax checkpoints, resume from the latest one.
* `Training`: what a trainer prepares (config, mesh, state, batch plan, device data, compiled step) and
  hands to `run`, the same way for the autoencoder, the classifier and the MIL tile classifier.

Randomness is a function of (seed, step) only (`jax.random.fold_in`), and batches are a function of
(seed, step) too, so a run that is killed and resumed ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from deepsmote_jax import files
from deepsmote_jax.train import distributed
from deepsmote_jax.train import mesh as mesh_lib
from deepsmote_jax.train.checkpoint import CheckpointManager


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def split_model(model: nnx.Module):
  """(graphdef, params, batch_stats) with params / batch_stats as plain nested dicts."""
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(stats)


def merge_model(graphdef, params, batch_stats) -> nnx.Module:
  return nnx.merge(graphdef, params, batch_stats)


def batch_stats_of(model: nnx.Module):
  return nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def create_state(model: nnx.Module, tx: optax.GradientTransformation):
  """Splits `model` and initialises the optimiser; returns (graphdef, TrainState)."""
  graphdef, params, stats = split_model(model)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats, opt_state=tx.init(params))
  return graphdef, state


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation, batch_stats) -> TrainState:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(
    step=state.step + 1, params=optax.apply_updates(state.params, updates), batch_stats=batch_stats, opt_state=opt_state
  )


ACTIVE = "_active"


def with_active(batches: dict, n_active: int) -> dict:
  """Adds the per-step 'active' flags used to pad the last call of a run to the compiled length."""
  k = len(jax.tree.leaves(batches)[0])
  return {**batches, ACTIVE: np.arange(k) < n_active}


def pad_steps(batches: dict, k: int) -> dict:
  """Pads stacked host batches (n, ...) to k steps by repeating the last one (inactive)."""
  n = len(jax.tree.leaves(batches)[0])
  if n == k:
    return with_active(batches, n)
  padded = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[-1:], k - n, axis=0)]), batches)
  return with_active(padded, n)


def batch_shardings(mesh: Mesh, batches: dict) -> dict:
  """Shardings of stacked (K, B, ...) batches: split on B over 'data'; the per-step flags replicated."""
  sh = {k: mesh_lib.batch_sharding(mesh, leading_axes=1) for k in batches}
  if ACTIVE in sh:
    sh[ACTIVE] = mesh_lib.replicated(mesh)
  return sh


def place_batches(host_batches: dict, mesh: Mesh, k: int) -> dict:
  """Host batches for n <= k steps -> padded to k steps, flagged and put on the mesh (with several processes,
  each puts the part of the global batch on its own devices)."""
  padded = pad_steps(host_batches, k)
  return mesh_lib.put(padded, batch_shardings(mesh, padded))


StepFn = Callable[[TrainState, Any, jax.Array, Any], tuple[TrainState, dict]]


def compile_steps(
  step_fn: StepFn, *, mesh: Mesh, state: TrainState, batch_example, data=None, unroll=None, donate: bool = True
):
  """jit(scan(step_fn)) over K stacked batches with explicit shardings.

  `step_fn(state, batch, key, data) -> (state, metrics)`; `batch_example` has the stacked shape
  (K, B, ...) per leaf; `data` is an optional pytree of device-resident arrays (replicated) that the step
  reads (e.g. the whole image set for class sampling). Returns `f(state, batches, key, data)` whose
  metrics are stacked over the K steps.

  `unroll` (default: fully on CPU, 1 elsewhere): XLA:CPU runs convolutions inside a while loop (a rolled
  scan) several times slower than in straight-line code -- measured 1.6 s vs 0.23 s per small-CNN step --
  so on the CPU the K steps are unrolled; on GPU/TPU the rolled loop keeps compile time flat.
  """
  if unroll is None:
    unroll = True if jax.default_backend() == "cpu" else 1
  repl = mesh_lib.replicated(mesh)
  state_sh = jax.tree.map(lambda _: repl, state)
  batch_sh = batch_shardings(mesh, with_active(batch_example, len(jax.tree.leaves(batch_example)[0])))
  data_sh = jax.tree.map(lambda _: repl, data)

  def multi_step(state, batches, key, data):
    def body(st, batch):
      active = batch.pop(ACTIVE)
      new, metrics = step_fn(st, batch, key, data)
      # Steps past the end of the run (padding of the last call) leave the state unchanged.
      new = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, st)
      return new, (metrics, active)

    return jax.lax.scan(body, state, batches, unroll=unroll)

  return jax.jit(
    multi_step,
    in_shardings=(state_sh, batch_sh, repl, data_sh),
    out_shardings=(state_sh, repl),
    donate_argnums=(0,) if donate else (),
  )


CPU_MAX_STEPS_PER_CALL = 2


def steps_per_call_for_backend(k: int) -> int:
  """K steps per compiled call, capped on the CPU: there the steps are unrolled (see `compile_steps`), so a
  large K only multiplies compile time, and per-call dispatch is negligible next to a CPU step."""
  return min(k, CPU_MAX_STEPS_PER_CALL) if jax.default_backend() == "cpu" else k


def place_state(state: TrainState, mesh: Mesh) -> TrainState:
  return mesh_lib.put(state, mesh_lib.replicated(mesh))


class EpochPlan:
  """Maps a global step to its batch of indices: a pure function of (seed, step), so resumed runs see the
  same data. Subclasses define `epoch_order(rng)` (the indices of one epoch, already shuffled); the last
  batch of an epoch is padded and masked, never dropped."""

  def __init__(self, epoch_size: int, batch_size: int, seed: int):
    self.batch_size, self.seed = batch_size, seed
    self.steps_per_epoch = -(-epoch_size // batch_size)
    self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def epoch_order(self, rng: np.random.Generator) -> np.ndarray:
    raise NotImplementedError

  def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps_per_epoch, B) indices and masks of epoch `e` (the last epoch's kept; safe from several threads:
    the one-entry cache is replaced whole, never read back after another thread may have replaced it)."""
    cached = self._cache.get(e)
    if cached is None:
      order = np.asarray(self.epoch_order(np.random.default_rng([self.seed, e])), np.int32)
      n = self.steps_per_epoch * self.batch_size
      idx, mask = np.zeros(n, np.int32), np.zeros(n, bool)
      idx[: len(order)], mask[: len(order)] = order, True
      cached = (idx.reshape(-1, self.batch_size), mask.reshape(-1, self.batch_size))
      self._cache = {e: cached}
    return cached

  def __call__(self, first: int, n: int) -> dict:
    steps = [divmod(s, self.steps_per_epoch) for s in range(first, first + n)]
    return {
      "index": np.stack([self.epoch(e)[0][i] for e, i in steps]),
      "mask": np.stack([self.epoch(e)[1][i] for e, i in steps]),
    }


@dataclasses.dataclass
class RunOptions:
  total_steps: int
  steps_per_call: int
  workdir: str | None = None
  checkpoint_every_steps: int = 0  # 0: only at the end
  keep_checkpoints: int = 3
  resume: bool = False
  images_per_step: int = 1  # for images/s
  progress: bool = True
  description: str = "train"
  stop_after_steps: int | None = None  # stop early (as if killed) after this many steps; tests use it
  eval_every_steps: int = 0  # with `evaluate`: also at the end of the run
  overwrite: bool = False  # start over in a workdir that holds another run's checkpoints


def chunk_plan(start: int, total: int, k: int) -> Iterator[tuple[int, int]]:
  """(first_step, n_steps) of each compiled call; all calls have k steps except possibly the last."""
  step = start
  while step < total:
    n = min(k, total - step)
    yield step, n
    step += n


class MetricsWriter:
  """Appends one JSON object per line to `<workdir>/metrics.jsonl`.

  Records past `keep_until_step` (a run that starts fresh: 0; a resumed run: its restored step) are
  dropped first, so a killed run's lines after its last checkpoint are not mixed into the resumed one.
  With several processes only process 0 writes (the metrics are global: every process has the same).
  """

  def __init__(self, workdir: str | None, keep_until_step: int = 0):
    self.path = pathlib.Path(workdir) / "metrics.jsonl" if workdir and distributed.is_primary() else None
    if self.path:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      if self.path.exists():
        kept = [
          line
          for line in self.path.read_text().splitlines()
          if line.strip() and json.loads(line).get("step", 0) <= keep_until_step
        ]
        files.atomic_write_text(self.path, "".join(line + "\n" for line in kept))

  def write(self, record: dict) -> None:
    if self.path:
      with self.path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _open_checkpoints(state: TrainState, options: RunOptions, metadata: dict | None) -> CheckpointManager | None:
  """The workdir's checkpoint manager, after making sure its checkpoints belong to this run.

  Without `resume`, checkpoints of an earlier run are refused (or removed with `overwrite`), so two runs
  never mix. With `resume`, the latest checkpoint must have been written with the same `metadata['run']`
  (model, settings, data) and hold arrays of this model's shapes; every difference is named.
  """
  if not options.workdir:
    return None
  directory = pathlib.Path(options.workdir) / "checkpoints"
  manager = CheckpointManager(directory, max_to_keep=options.keep_checkpoints)
  latest = manager.latest_step()
  if latest is None:
    return manager
  if not options.resume:
    if not options.overwrite:
      manager.close()
      raise ValueError(
        f"{directory} holds the checkpoints of an earlier run (latest step {latest}); "
        "resume it (--resume) or start over (--overwrite)"
      )
    manager.close()
    if distributed.is_primary():
      shutil.rmtree(directory)
    distributed.barrier("deepsmote_checkpoints_removed")
    return CheckpointManager(directory, max_to_keep=options.keep_checkpoints)
  stored = manager.metadata(latest).get("run")
  wanted = (metadata or {}).get("run")
  wanted = None if wanted is None else json.loads(json.dumps(wanted))  # as stored: tuples become lists
  if wanted is not None and stored != wanted:
    manager.close()
    raise ValueError(
      f"cannot resume from {directory}: it was trained with other settings or data: "
      + describe_changes(stored or {}, wanted)
    )
  try:
    manager.check_shapes(state, latest)
  except ValueError:
    manager.close()
    raise
  return manager


def fingerprint(*arrays: np.ndarray) -> str:
  """A short content hash of arrays (shape, dtype and bytes): the identity of a run's training data."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.shape}{a.dtype}".encode())
    h.update(a.data)
  return h.hexdigest()[:16]


def describe_changes(old: Any, new: Any, prefix: str = "") -> str:
  """'a.b: 1 -> 2; c: added' for the leaves that differ between two JSON-like trees."""
  changes = []
  if isinstance(old, dict) and isinstance(new, dict):
    for k in sorted(set(old) | set(new), key=str):
      name = f"{prefix}.{k}" if prefix else str(k)
      if k not in old:
        changes.append(f"{name}: added")
      elif k not in new:
        changes.append(f"{name}: removed")
      elif old[k] != new[k]:
        changes.append(describe_changes(old[k], new[k], name))
  elif old != new:
    short = lambda v: s if len(s := json.dumps(v)) <= 60 else s[:57] + "..."
    changes.append(f"{prefix or 'value'}: {short(old)} -> {short(new)}")
  return "; ".join(c for c in changes if c)


def _progress_bar(options: RunOptions, start: int) -> tqdm:
  """The primary process's progress bar (none elsewhere or without `options.progress`)."""
  return tqdm(
    total=options.total_steps,
    initial=start,
    desc=options.description,
    disable=not options.progress or not distributed.is_primary(),
    dynamic_ncols=True,
    leave=True,
    # Redirected to a file, a bar redrawn 10 times a second piles up (250 KB logs): once a minute there.
    mininterval=0.1 if sys.stderr.isatty() else 60.0,
  )


def _eval_due(first: int, step_now: int, options: RunOptions) -> bool:
  """Whether the call that ran steps [first, step_now) crossed an evaluation point or ended the run."""
  every = options.eval_every_steps
  return bool(every) and (step_now // every > first // every or step_now == options.total_steps)


def run(
  state: TrainState,
  *,
  compiled: Callable,
  get_batches: Callable[[int, int], Any],
  key: jax.Array,
  data,
  mesh: Mesh,
  options: RunOptions,
  metadata: dict | None = None,
  on_metrics: Callable[[int, dict], None] | None = None,
  evaluate: Callable[[int, TrainState], dict] | None = None,
) -> tuple[TrainState, dict]:
  """Runs `options.total_steps` steps of `compiled` from `state` (or from the latest checkpoint).

  `get_batches(first_step, n)` returns the host (NumPy) batches for steps [first_step, first_step + n),
  stacked on a leading axis; they are put on the mesh here. Returns the final state and a summary.
  """
  manager = _open_checkpoints(state, options, metadata)
  state = place_state(state, mesh)  # first, so a checkpoint is restored straight into the mesh's shardings
  if manager is not None and options.resume and manager.latest_step() is not None:
    state, _ = manager.restore(state)
  start = int(jax.device_get(state.step))
  writer = MetricsWriter(options.workdir, keep_until_step=start)
  last_metrics: dict = {}
  seen = 0
  t_start = time.perf_counter()
  bar = _progress_bar(options, start)
  stop_at = options.stop_after_steps
  last_saved = start
  clock = {"last": None}  # time of the previous metrics fetch, for images/s
  try:
    pending = None
    for first, n in chunk_plan(start, options.total_steps, options.steps_per_call):
      if stop_at is not None and first >= stop_at:
        break
      batches = place_batches(get_batches(first, n), mesh, options.steps_per_call)
      state, metrics = compiled(state, batches, key, data)
      # Fetching the previous call's metrics here keeps one call in flight while the host prepares the next.
      if pending is not None:
        _report(pending, clock, bar, writer, on_metrics, options)
      pending = (first, n, metrics)
      seen += n
      step_now = first + n
      if evaluate and _eval_due(first, step_now, options):
        record = {"step": step_now, **{f"val_{k}": v for k, v in evaluate(step_now, state).items()}}
        writer.write(record)
        bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
      due = options.checkpoint_every_steps and step_now - last_saved >= options.checkpoint_every_steps
      if manager and due and step_now < options.total_steps:
        manager.save(step_now, state, metadata=metadata)
        last_saved = step_now
    if pending is not None:
      last_metrics = _report(pending, clock, bar, writer, on_metrics, options)
    final_step = int(jax.device_get(state.step))
    if manager and final_step > last_saved:
      manager.save(final_step, state, metadata=metadata, force=True)
  finally:
    bar.close()
    if manager:
      manager.close()
    if hasattr(get_batches, "close"):  # a streamed feed (`feed.FedPlan`): release its pipeline
      get_batches.close()
  wall = time.perf_counter() - t_start
  summary = {"final_step": final_step, "start_step": start, "steps_run": seen, "wall_s": wall, **last_metrics}
  return state, summary


def _report(pending, clock: dict, bar, writer: MetricsWriter, on_metrics, options: RunOptions) -> dict:
  """Fetches one call's metrics; images/s is measured between consecutive fetches (first call: compile)."""
  first, n, (metrics, active) = pending
  metrics, active = jax.device_get((metrics, active))
  now = time.perf_counter()
  dt = now - clock["last"] if clock["last"] is not None else float("nan")
  clock["last"] = now
  means = {k: float(np.mean(np.asarray(v)[active])) for k, v in metrics.items()}
  record = {
    "step": first + n,
    **means,
    "images_per_s": options.images_per_step * n / dt if dt == dt else None,
    "time": time.time(),
  }
  bar.update(n)
  ips = record["images_per_s"]
  bar.set_postfix(
    {k: f"{v:.4g}" for k, v in list(means.items())[:3]} | {"img/s": f"{ips:.0f}" if ips else "-"}, refresh=False
  )
  writer.write(record)
  if on_metrics:
    on_metrics(first + n, record)
  if any(not math.isfinite(v) for v in means.values()):
    raise FloatingPointError(f"non-finite training metrics at step {first + n}: {means}")
  return means


@dataclasses.dataclass
class Training:
  """A prepared run, built once by a trainer's `prepare_*`: its compiled multi-step call, initial state and
  inputs. `cfg` is the trainer's config (`epochs`, `steps_per_call`, `seed` are read here); `plan(first, n)`
  gives the host batches and has `steps_per_epoch`. `step_fn` is compiled here for `cfg.steps_per_call`
  steps per call, so every trainer compiles and runs the same way."""

  cfg: Any
  mesh: Mesh
  graphdef: Any
  state: TrainState
  plan: Any
  data: Any
  step_fn: dataclasses.InitVar[StepFn]
  compiled: Callable = dataclasses.field(init=False)

  def __post_init__(self, step_fn: StepFn):
    example = self.plan(0, min(self.cfg.steps_per_call, self.total_steps))
    self.compiled = compile_steps(step_fn, mesh=self.mesh, state=self.state, batch_example=example, data=self.data)

  @property
  def total_steps(self) -> int:
    return self.cfg.epochs * self.plan.steps_per_epoch

  def run(
    self,
    *,
    metadata: dict,
    evaluate: Callable[[int, TrainState], dict] | None = None,
    eval_every_steps: int = 0,
    **options: Any,
  ) -> tuple[TrainState, dict]:
    """`run` of all `total_steps` from the initial state with the key of `cfg.seed`; `options` are the other
    `RunOptions` fields. With `evaluate`: every `eval_every_steps` (0: every epoch) and at the end."""
    every = (eval_every_steps or self.plan.steps_per_epoch) if evaluate is not None else 0
    return run(
      self.state,
      compiled=self.compiled,
      get_batches=self.plan,
      key=jax.random.key(self.cfg.seed),
      data=self.data,
      mesh=self.mesh,
      options=RunOptions(
        total_steps=self.total_steps, steps_per_call=self.cfg.steps_per_call, eval_every_steps=every, **options
      ),
      metadata=metadata,
      evaluate=evaluate,
    )


def as_images(images) -> Any:
  """`images` as given when they read themselves by slice (a streamed `FileImages`: each chunk of `batched` is
  decoded when it is reached, never the whole set), else as a NumPy array."""
  return images if hasattr(images, "stream") and hasattr(images, "__getitem__") else np.asarray(images)


def batched(fn: Callable[[np.ndarray], Any], x: np.ndarray, batch_size: int) -> np.ndarray:
  """Applies `fn` to fixed-size chunks of `x` (the last one padded) so one compiled shape serves all; `x` may
  be any sliceable (N, ...) images (see `as_images`)."""
  n = len(x)
  if n == 0:
    raise ValueError("nothing to process: empty input")
  bs = min(batch_size, n)
  out = []
  for i in range(0, n, bs):
    chunk = x[i : i + bs]
    pad = bs - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    out.append(np.asarray(fn(chunk))[: bs - pad])
  return np.concatenate(out)
