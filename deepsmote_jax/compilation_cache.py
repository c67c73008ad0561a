"""JAX's persistent compilation cache: reruns, seeds and same-shaped runs skip XLA compilation."""

from __future__ import annotations

import os

import jax

DEFAULT_DIR = os.path.expanduser("~/.cache/deepsmote_jax/xla")


def enable(path: str | None = None) -> None:
  """Caches compiled programs under `path` (default ~/.cache/deepsmote_jax/xla).

  `DEEPSMOTE_JAX_CACHE` overrides the folder; an empty value disables the cache. Programs that compile in
  under a second are not stored (they cost more to write than to rebuild).
  """
  path = os.environ.get("DEEPSMOTE_JAX_CACHE", path or DEFAULT_DIR)
  if path and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
