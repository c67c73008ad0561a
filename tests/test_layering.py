"""The package's layers only look down: models <- train <- jobs, with data, export and reports beside the jobs.

Read from the source (no imports are executed): every `deepsmote_jax` import of every module is checked
against what its layer may use, the module graph must have no cycle, and imports sit at module top except
for optional heavy dependencies.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "deepsmote_jax"

# Group of a module (first matching prefix) -> groups it may import from (itself always allowed).
GROUPS = {
  "deepsmote_jax.files": set(),
  "deepsmote_jax.metrics": set(),
  "deepsmote_jax.compilation_cache": set(),
  "deepsmote_jax.paper": {"deepsmote_jax.metrics"},
  "deepsmote_jax.models": set(),
  "deepsmote_jax.smote": set(),
  "deepsmote_jax.data": {"deepsmote_jax.files"},
  "deepsmote_jax.train": {"deepsmote_jax.models", "deepsmote_jax.metrics", "deepsmote_jax.files"},
  "deepsmote_jax.export": {"deepsmote_jax.models", "deepsmote_jax.train", "deepsmote_jax.files"},
  "deepsmote_jax.visualize": {"deepsmote_jax.files"},
  "deepsmote_jax.evaluation": {
    "deepsmote_jax.metrics",
    "deepsmote_jax.files",
    "deepsmote_jax.visualize",
    "deepsmote_jax.paper",
  },
  "deepsmote_jax.config_lib": set(),
  # The packaged config files (loaded by path, `--config <name>`) build on config_lib only.
  "deepsmote_jax.configs": {"deepsmote_jax.config_lib"},
  "deepsmote_jax.synthetic_quality": set(),
}
BOTTOM = set(GROUPS)
# The imbalanced-learn style sampler: a library face over models, train and smote (no files, no jobs).
GROUPS["deepsmote_jax.sampler"] = {"deepsmote_jax.models", "deepsmote_jax.train", "deepsmote_jax.smote"}
GROUPS["deepsmote_jax.jobs"] = BOTTOM
GROUPS["deepsmote_jax.cli"] = BOTTOM | {"deepsmote_jax.jobs"}
GROUPS["deepsmote_jax"] = BOTTOM | {"deepsmote_jax.jobs", "deepsmote_jax.sampler"}  # the package face: the public API
# Imports that may stay inside functions: optional or heavy third-party packages only.
# (jax2tf and clu's TensorBoard writer import TensorFlow.)
LAZY_OK = (
  "jax.experimental.jax2tf",
  "clu",
  "tensorflow",
  "tensorflow_datasets",
  "keras",
  "h5py",
  "elpv_dataset",
  "matplotlib",
  "scipy",
  "tqdm",
)


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(PACKAGE.parent).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _group(module: str) -> str:
  matches = [g for g in GROUPS if module == g or module.startswith(g + ".")]
  assert matches, f"{module} belongs to no layer: add it to GROUPS in {__file__}"
  return max(matches, key=len)


def _resolve(name: str) -> str:
  """The package module an imported dotted name refers to (a module, or the module defining the name)."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name


def _imports(module: str) -> list[tuple[str, int, bool]]:
  """(imported deepsmote_jax module, line, at module top) for every import statement of `module`."""
  path = MODULES[module]
  tree = ast.parse(path.read_text())
  # Module level: the module's statements, and those of a module-level try (an import with a fallback).
  top = {id(n) for n in tree.body}
  for n in tree.body:
    if isinstance(n, ast.Try):
      top |= {id(m) for m in n.body + [s for h in n.handlers for s in h.body]}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      base = node.module
      if node.level:
        pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
          pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{node.module}"
      names = [f"{base}.{a.name}" for a in node.names]
    elif isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    else:
      continue
    for name in names:
      out.append((name, node.lineno, id(node) in top or _in_type_checking(tree, node)))
  return out


def _in_type_checking(tree: ast.Module, node: ast.AST) -> bool:
  for stmt in tree.body:
    if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
      if any(node is n for n in ast.walk(stmt)):
        return True
  return False


def _graph() -> dict[str, set[str]]:
  graph = {}
  for module in MODULES:
    graph[module] = {_resolve(n) for n, _, _ in _imports(module) if n.startswith("deepsmote_jax")} - {"", module}
  return graph


def test_every_module_has_a_layer():
  for module in MODULES:
    _group(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_look_down(module):
  group = _group(module)
  allowed = GROUPS[group] | {group}
  for name, line, _ in _imports(module):
    if not name.startswith("deepsmote_jax"):
      continue
    target = _resolve(name)
    if target in ("", module) or (target == "deepsmote_jax" and module != "deepsmote_jax"):
      assert target != "deepsmote_jax" or module == "deepsmote_jax", (
        f"{MODULES[module]}:{line} imports the package face 'deepsmote_jax' itself"
      )
      continue
    target_group = _group(target)
    assert target_group in allowed, (
      f"{MODULES[module]}:{line}: {group} must not import {target} ({target_group}); allowed: {sorted(allowed)}"
    )


def test_no_import_cycles():
  graph = _graph()
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for n in sorted(graph.get(m, ())):
      if state.get(n) == 1:
        cycle = stack[stack.index(n) :] + [n]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if n not in state:
        visit(n)
    stack.pop()
    state[m] = 2

  for m in sorted(graph):
    if m not in state:
      visit(m)


def test_imports_at_module_top():
  late = []
  for module, path in MODULES.items():
    for name, line, at_top in _imports(module):
      if not at_top and not any(name == m or name.startswith(m + ".") for m in LAZY_OK):
        late.append(f"{path}:{line} imports {name} inside a function")
  assert not late, "\n".join(late)


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
  """The checks above can fail: an upward import planted in a copy of a models/ module is caught."""
  fake = tmp_path / "deepsmote_jax" / "models" / "upward.py"
  fake.parent.mkdir(parents=True)
  fake.write_text("from deepsmote_jax.jobs import pipeline\n\ndef f():\n  import numpy\n")
  monkeypatch.setitem(MODULES, "deepsmote_jax.models.upward", fake)
  with pytest.raises(AssertionError, match="must not import"):
    test_imports_only_look_down("deepsmote_jax.models.upward")
  with pytest.raises(AssertionError, match="inside a function"):
    test_imports_at_module_top()
