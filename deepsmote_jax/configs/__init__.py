"""The packaged config files, reachable by name: `--config default`, `--config amoled_dent_200:local`.

Each `<name>.py` here defines `get_config(arg=None)` and is loaded by path, as ml_collections loads any
`--config path/to/file.py[:arg]`; the checkout's top-level `configs/` is a link to this folder, so
`--config configs/default.py` names the same file.
"""

from __future__ import annotations

import os
import pathlib
import re

DIR = pathlib.Path(__file__).resolve().parent


def names() -> list[str]:
  """The packaged configs' names (file stems)."""
  return sorted(p.stem for p in DIR.glob("*.py") if not p.name.startswith("_"))


def resolve(value: str) -> str:
  """`--config`'s value as a loadable `path[:arg]`: an existing file as given, else a packaged config by
  name (`default`, `default.py`, `configs/default.py` when that file is absent, e.g. outside the checkout)."""
  path, sep, arg = value.partition(":")
  if os.path.isfile(path):
    return value
  name = pathlib.PurePath(path).name.removesuffix(".py")
  packaged = DIR / f"{name}.py"
  plain = re.fullmatch(r"[A-Za-z0-9_]+(\.py)?", path) or pathlib.PurePath(path).parent.name == "configs"
  if plain and name in names():
    return f"{packaged}{sep}{arg}"
  raise ValueError(
    f"--config {value}: {path!r} is neither a config file nor a packaged config (packaged: {', '.join(names())})"
  )
