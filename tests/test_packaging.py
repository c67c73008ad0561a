"""What a fresh install relies on: every declared dependency pinned in the tested-versions file, the
licence file matching the declared licence, and the typing marker shipped with the package."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")


def _name(requirement: str) -> str:
  return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_constraints_pin_every_declared_dependency():
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  declared = {_name(r) for r in project["dependencies"]}
  declared |= {_name(r) for r in project["optional-dependencies"]["test"] if not r.startswith("deepsmote_jax")}
  declared |= {_name(r) for r in project["optional-dependencies"]["data"]} - {"tensorflow"}  # CPU build on x86_64
  pinned = {}
  for line in (ROOT / "constraints-ci.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
      name, _, version = line.partition("==")
      assert version, f"constraints-ci.txt: {line!r} is not an exact pin"
      pinned[_name(name)] = version
  assert declared - set(pinned) == set(), "declared but not pinned in constraints-ci.txt"


def test_licence_file_matches_declared_licence_and_typing_marker_ships():
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())
  assert project["project"]["license"]["text"] == "Apache-2.0"
  assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
  assert (ROOT / "deepsmote_jax" / "py.typed").exists()
  assert "py.typed" in project["tool"]["setuptools"]["package-data"]["deepsmote_jax"]
