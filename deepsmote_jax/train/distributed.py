"""Several processes (hosts) as one JAX program: `jax.distributed.initialize` with checked arguments.

Every process runs the same command; `initialize` joins them before anything touches JAX. Afterwards
`jax.devices()` lists the devices of all processes, the training mesh (`mesh.make_mesh`) spans them, each
process feeds the shards of the global batch that live on its own devices (`mesh.put`), and collectives
cross processes (NCCL on GPUs, ICI/DCN on TPUs, Gloo over TCP between CPU processes). Only process 0
(`is_primary`) writes metrics.jsonl and exports; Orbax checkpoints are written by all processes together.

* explicit: `initialize("10.0.0.1:1234", num_processes=2, process_id=0)` on the first host, `process_id=1`
  on the second (process 0 hosts the coordinator at that address);
* `auto=True`: JAX's cluster detection (Slurm, Open MPI, Cloud TPU pods, ...) fills in what is not given.

Bad combinations are one-line ValueErrors, and a coordinator that cannot be reached is reported within
`timeout_s` (JAX itself aborts the process on a connection timeout, so a non-zero process first waits for
the coordinator's port to accept TCP connections).
"""

from __future__ import annotations

import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

try:  # private: JAX's cluster detection and backend state (used where importable)
  from jax._src import clusters, xla_bridge
except ImportError:  # pragma: no cover - moved in another JAX version
  clusters = xla_bridge = None

DEFAULT_TIMEOUT_S = 300


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  auto: bool = False,
  timeout_s: float = DEFAULT_TIMEOUT_S,
  local_device_ids=None,
) -> bool:
  """Joins this process to a multi-process JAX run; returns True if distributed, False for one process.

  Nothing given (and `auto` False): a single process, nothing to do. Must run before any JAX computation
  or device query of this process.
  """
  explicit = any(v is not None for v in (coordinator_address, num_processes, process_id))
  if not auto and not explicit:
    return False
  if (num_processes is None) != (process_id is None):
    given, missing = ("--num_processes", "--process_id") if process_id is None else ("--process_id", "--num_processes")
    raise ValueError(f"{given} needs {missing} too (each process gets its own --process_id in [0, num_processes))")
  if num_processes is not None:
    num_processes, process_id = _int("num_processes", num_processes), _int("process_id", process_id)
    if num_processes < 1:
      raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} is outside [0, {num_processes}) for --num_processes={num_processes}")
  if not auto and coordinator_address is None:
    raise ValueError("--num_processes/--process_id need --coordinator_address HOST:PORT (on process 0's host)")
  if not auto and num_processes is None:
    raise ValueError("--coordinator_address needs --num_processes and --process_id (or --distributed to detect them)")
  if coordinator_address is not None:
    _host_port(coordinator_address)
  if not float(timeout_s) > 0:
    raise ValueError(f"the initialization timeout must be > 0 s, got {timeout_s}")
  if jax.distributed.is_initialized():
    raise ValueError("jax.distributed is already initialized in this process (initialize once, before any JAX use)")
  if _backend_started():
    raise ValueError("initialize the distributed run before any JAX computation or device query of this process")
  if auto:
    coordinator_address, num_processes, process_id, local_device_ids = _detect(
      coordinator_address, num_processes, process_id, local_device_ids, timeout_s
    )
  _use_cpu_collectives()
  if num_processes is not None and process_id:
    wait_for_coordinator(coordinator_address, timeout_s, what=f"process {process_id} of {num_processes}")
  elif process_id == 0 and num_processes and num_processes > 1:
    _check_port_free(coordinator_address)
  try:
    jax.distributed.initialize(
      coordinator_address,
      num_processes,
      process_id,
      local_device_ids=local_device_ids,
      initialization_timeout=max(1, int(round(float(timeout_s)))),
    )
  except (ValueError, TypeError, RuntimeError) as e:
    if auto and coordinator_address is None:
      raise ValueError(
        "--distributed: no cluster detected (Slurm, Open MPI, Cloud TPU, ...); give --coordinator_address, "
        "--num_processes and --process_id instead"
      ) from None
    raise ValueError(f"distributed initialization failed: {_one_line(e)}") from None
  return True


def is_primary() -> bool:
  """True in process 0 (and in a run of one process): the process that writes files."""
  return not jax.distributed.is_initialized() or jax.process_index() == 0


def process_count() -> int:
  """The number of processes (1 without `initialize`), without starting a backend in a single process."""
  return jax.process_count() if jax.distributed.is_initialized() else 1


def barrier(name: str) -> None:
  """Waits until every process reaches `barrier(name)` (nothing to wait for in a single process)."""
  if process_count() > 1:
    multihost_utils.sync_global_devices(name)


def from_primary(values) -> np.ndarray:
  """Process 0's integer `values` on every process (the values as given in a single process): decisions
  read from shared files are made once, so no process can take another branch (and another collective)."""
  values = np.asarray(values, np.int64)
  if process_count() == 1:
    return values
  return np.asarray(multihost_utils.broadcast_one_to_all(values), np.int64)


def wait_for_coordinator(address: str, timeout_s: float, *, what: str = "this process") -> None:
  """Returns once `address` accepts a TCP connection; a ValueError after `timeout_s` seconds of refusals."""
  host, port = _host_port(address)
  deadline = time.monotonic() + float(timeout_s)
  error: Exception | None = None
  while True:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      raise ValueError(
        f"the coordinator {address} was not reachable within {float(timeout_s):g} s ({what}): "
        f"{_one_line(error) if error else 'timed out'}; start process 0 on that host, or check the address and port"
      )
    try:
      with socket.create_connection((host, port), timeout=min(remaining, 2.0)):
        return
    except OSError as e:  # refused, unreachable, unknown host, timeout
      error = e
      time.sleep(min(0.25, max(deadline - time.monotonic(), 0)))


def _detect(coordinator_address, num_processes, process_id, local_device_ids, timeout_s):
  """JAX's cluster detection for what is not given (left to `jax.distributed.initialize` where the
  detection API is not importable)."""
  if clusters is None:  # pragma: no cover
    return coordinator_address, num_processes, process_id, local_device_ids
  return clusters.ClusterEnv.auto_detect_unset_distributed_params(
    coordinator_address, num_processes, process_id, local_device_ids, None, int(timeout_s)
  )


def _use_cpu_collectives() -> None:
  """Gloo over TCP for collectives between CPU processes, unless another implementation was chosen
  (jax_cpu_collectives_implementation: 'gloo' is this JAX's default; 'mpi' needs an MPI library)."""
  try:
    if not jax.config.jax_cpu_collectives_implementation:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except AttributeError:  # pragma: no cover - an older JAX: the collectives were a boolean flag
    jax.config.update("jax_cpu_enable_gloo_collectives", True)


def _backend_started() -> bool:
  check = getattr(xla_bridge, "backends_are_initialized", None)  # where absent, JAX reports it itself
  return bool(check and check())


def _check_port_free(address: str) -> None:
  """Process 0 hosts the coordinator: its port must be free here (JAX aborts the process otherwise)."""
  _, port = _host_port(address)
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind(("", port))
    except OSError as e:
      raise ValueError(
        f"process 0 hosts the coordinator, but port {port} of {address} is in use on this host ({_one_line(e)}); "
        "choose another --coordinator_address port"
      ) from None


def _host_port(address: str) -> tuple[str, int]:
  host, sep, port = str(address).rpartition(":")
  host = host.strip("[]")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"--coordinator_address={address!r}: expected HOST:PORT, e.g. 10.0.0.1:1234")
  return host, int(port)


def _int(name: str, value) -> int:
  try:
    if isinstance(value, bool) or int(value) != value:
      raise TypeError
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"--{name} must be an integer, got {value!r}") from None


def _one_line(e: BaseException) -> str:
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  return lines[0] if lines else type(e).__name__
