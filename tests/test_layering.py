"""The package's layering, read from the source: every import (function-level and TYPE_CHECKING
ones included) of every module goes down the layers the README's Layout section lists, never up
or sideways; the library never imports the commands, configs/ or experiments/; configs/ build on
the library's defaults; no Python file is over 400 lines; nothing points outside the repository.
"""
import ast
import os
import re
import subprocess

import pytest

from tests.helpers import ROOT

# Lowest first: a module may import its own unit and the units of lower ranks only.
LAYERS = [
    ("phd_jax.spec", "phd_jax.files"),
    ("phd_jax.masks",),
    ("phd_jax.data", "pallas_kernels"),
    ("phd_jax.config",),
    ("phd_jax.model",),
    ("phd_jax.checkpoints",),
    ("phd_jax.inference",),
    ("phd_jax.eval",),
    ("phd_jax.interop",),
    ("phd_jax.train",),
    ("phd_jax.cli",),
]
# `python -m phd_jax.X` under the commands' earlier names: thin entry points into phd_jax.cli.
COMMAND_SHIMS = ("phd_jax.generate", "phd_jax.evaluate", "phd_jax.prepare", "phd_jax.tokenizer",
                 "phd_jax.hf", "phd_jax.train.__main__")
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
PROJECT = ("phd_jax", "pallas_kernels", "configs", "experiments", "tests")
MAX_LINES = 400


def _modules(package: str) -> dict[str, str]:
  """{module name: path} of every .py file under ROOT/package."""
  out = {}
  for folder, _, files in os.walk(os.path.join(ROOT, package)):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(folder, f)
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[name.removesuffix(".__init__")] = path
  return out


def _imports(path: str, module: str) -> list[tuple[int, str]]:
  """(line, imported module) of every import statement anywhere in the file."""
  tree = ast.parse(open(path).read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: resolve against this module's package
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      # `from pkg import sub` imports pkg.sub when sub is a module: count the longest match.
      out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
  return [(line, name) for line, name in out if name.split(".")[0] in PROJECT]


def _unit(module: str) -> str | None:
  """The layer unit a module belongs to (its longest prefix in LAYERS)."""
  parts = module.split(".")
  for n in range(len(parts), 0, -1):
    if ".".join(parts[:n]) in RANK:
      return ".".join(parts[:n])
  return None


LIBRARY = {**_modules("phd_jax"), **_modules("pallas_kernels")}


def test_every_library_module_has_a_layer():
  unplaced = [m for m in LIBRARY if _unit(m) is None and m != "phd_jax"
              and m not in COMMAND_SHIMS]
  assert not unplaced, f"add these to LAYERS (and the README's Layout): {unplaced}"


@pytest.mark.parametrize("module", sorted(LIBRARY))
def test_imports_only_go_down(module):
  if module in COMMAND_SHIMS:
    bad = [(line, name) for line, name in _imports(LIBRARY[module], module)
           if not name.startswith("phd_jax.cli.")]
    assert not bad, f"{module}: a command shim imports only phd_jax.cli: {bad}"
    return
  unit = _unit(module)
  rank = RANK.get(unit, -1)  # phd_jax/__init__.py: imports nothing
  bad = []
  for line, name in _imports(LIBRARY[module], module):
    target = _unit(name)
    if target == unit:
      continue
    if target is None or RANK[target] >= rank:
      bad.append(f"{LIBRARY[module]}:{line} imports {name} ({target or 'outside the library'})")
  assert not bad, "imports that go up, sideways or out of the library:\n" + "\n".join(bad)


def test_no_import_cycles_inside_a_unit():
  """Within a unit (say phd_jax.data) modules may import each other, but never in a cycle, not
  even one dodged with a function-level import."""
  graph = {m: {n for _, name in _imports(p, m) for n in LIBRARY
               if n != m and (name == n or name.startswith(n + ".")) and _unit(n) == _unit(m)
               and n not in COMMAND_SHIMS}
           for m, p in LIBRARY.items() if m not in COMMAND_SHIMS}
  done, path = set(), []

  def visit(m):
    if m in path:
      raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
    if m in done:
      return
    path.append(m)
    for n in sorted(graph[m]):
      if not m.startswith(n + "."):  # importing a submodule runs its package's __init__ first
        visit(n)
    path.pop()
    done.add(m)

  for m in sorted(graph):
    visit(m)


def test_configs_build_on_the_library_defaults():
  for module, path in _modules("configs").items():
    for line, name in _imports(path, module):
      assert name.startswith(("configs.", "phd_jax.config")), f"{path}:{line} imports {name}"


def _tracked_files() -> list[str]:
  out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
  return [f for f in out.splitlines() if os.path.isfile(os.path.join(ROOT, f))]


def test_no_python_file_is_over_400_lines():
  long = {f: n for f in _tracked_files() if f.endswith(".py")
          if (n := sum(1 for _ in open(os.path.join(ROOT, f)))) > MAX_LINES}
  assert not long, f"split these (one idea per module): {long}"


def test_nothing_points_outside_the_repository():
  """Users have only this repository: no file may send them to a path beyond it."""
  outside = re.compile(r"\.\./shared|PHD_SPEC|/work/")
  bad = []
  for f in _tracked_files():
    if f.endswith((".png", ".npz", ".safetensors")) or f == "tests/test_layering.py":
      continue
    text = open(os.path.join(ROOT, f), errors="replace").read()
    bad += [f"{f}: {m.group(0)}" for m in outside.finditer(text)]
  assert not bad, bad
