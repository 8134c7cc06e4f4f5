"""Importing phd_jax changes nothing: every module of the package, imported in a clean
interpreter with both object-store variables set, leaves os.environ as it found it.

The third-party libraries the package imports are imported first: some write the environment at
their own import (lm_eval, tensorboardX, jax), whoever imports them; what is compared is what
phd_jax's own code does. The command modules each define absl flags of the same names, so each
one's flags are dropped after its import; `__main__` modules are scripts (importing one runs its
command) and are left out.
"""
import json
import os

from tests import commands

SCRIPT = """
import ast, importlib, importlib.util, json, os, pkgutil


def walk(folder, prefix):  # pkgutil.walk_packages would import the packages on its way
  for m in pkgutil.iter_modules([folder], prefix):
    yield m.name
    if m.ispkg:
      yield from walk(os.path.join(folder, m.name.rpartition(".")[2]), m.name + ".")


root = importlib.util.find_spec("phd_jax").submodule_search_locations[0]  # found, not imported
names = ["phd_jax"] + [n for n in walk(root, "phd_jax.") if not n.endswith(".__main__")]
third_party = set()
for folder, _, files in os.walk(root):
  for f in (f for f in files if f.endswith(".py")):
    for node in ast.walk(ast.parse(open(os.path.join(folder, f)).read())):
      if isinstance(node, ast.Import):
        third_party.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        third_party.add(node.module)
for name in sorted(third_party):
  if not name.startswith(("phd_jax", "pallas_kernels", "__future__")):
    try:
      importlib.import_module(name)
    except ImportError:  # optional ones (torch, transformers: make test-interop)
      pass
assert not any(m.startswith("phd_jax") for m in __import__("sys").modules)
from absl import flags

before = dict(os.environ)
for name in names:
  importlib.import_module(name)
  for flag in flags.FLAGS.get_flags_for_module(name):
    delattr(flags.FLAGS, flag.name)
after = dict(os.environ)
print(json.dumps({"modules": len(names), "changed": {
    k: [before.get(k), after.get(k)] for k in sorted(set(before) | set(after))
    if before.get(k) != after.get(k)}}))
"""


def test_importing_every_module_leaves_the_environment_unchanged():
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "STORAGE_EMULATOR_HOST": "127.0.0.1:9",
         "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # what the clients' settings derive from
  for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
    env.pop(name, None)
  done = commands.python(SCRIPT, clean_env=env)
  found = json.loads(done.stdout.strip().splitlines()[-1])
  assert found["modules"] > 50  # the whole package was walked
  assert found["changed"] == {}
