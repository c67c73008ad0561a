"""Where the jobs meet the user: bad settings, paths, files and exports end as one line and exit code 2.

`user_errors(verbose)` wraps a job: a ValueError / OSError / locked workdir (what bad input raises, each
message naming the file or `config.<section>.<key>`) becomes `error: <message>` on stderr and exit code 2;
with `verbose` the traceback is shown instead. Anything else is a bug and keeps its traceback.
`quiet_logs()` silences third-party INFO chatter (Orbax logs every checkpoint step through absl).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from absl import logging as absl_logging

from deepsmote_jax.jobs.lock import WorkdirLocked

USER_ERRORS = (ValueError, OSError, WorkdirLocked)


def quiet_logs() -> None:
  """Only warnings and errors from absl (Orbax) and JAX, only errors from TensorFlow's C++ core (its warnings
  repeat, with a traceback, the errors of image decoding that the job reports itself in one line)."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ("absl", "orbax", "jax", "tensorflow"):
    logging.getLogger(name).setLevel(logging.WARNING)
  if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1") == "1":  # unset, or JAX's default (`import jax` sets '1')
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"


def one_line(e: BaseException) -> str:
  """The error's message on one line; further lines are counted, not printed."""
  lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
  extra = f" (+{len(lines) - 1} more lines: rerun with --verbose)" if len(lines) > 1 else ""
  return lines[0].strip() + extra


@contextlib.contextmanager
def user_errors(verbose: bool = False):
  try:
    yield
  except USER_ERRORS as e:
    if verbose:
      raise
    print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
