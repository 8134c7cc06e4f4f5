"""What the tests build once per session and share across the pytest-xdist workers: the corpus,
the BPE tokenizer and the trained runs that tests only read.

Each thing lives in a folder of the session's shared temporary directory (the parent of every
worker's own basetemp), built by whichever worker asks first while it holds a file lock; a
`NAME.done` marker says the build finished, so a worker that waited on the lock (or asks later)
reads it as it is. A build that raised leaves no marker and is redone by the next asker.

A trained run is named by a hash of its whole config, so one config is trained once however many
tests (on whichever worker) read it. Tests that change a run work on a copy (`copy_run`).
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
from collections.abc import Callable

import ml_collections
from filelock import FileLock

# XLA's cheapest CPU code generation, for the whole session (tests/conftest.py adds it to XLA_FLAGS)
FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1")


def built_once(root: pathlib.Path, name: str,
               build: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """root/name, made by build(folder) the first time any worker of the session asks."""
  folder, done = root / name, root / f"{name}.done"
  with FileLock(str(root / f"{name}.lock")):
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir(parents=True)
      build(folder)
      done.touch()
  return folder


class TrainedRuns:
  """runs(cfg) -> the workdir of cfg trained to its last step (read-only: copy it to change it);
  runs.summary(cfg) -> what train_and_evaluate returned for it."""

  def __init__(self, root: pathlib.Path):
    self.root = root

  def _folder(self, cfg: ml_collections.ConfigDict) -> pathlib.Path:
    key = hashlib.sha256(cfg.to_json(sort_keys=True).encode()).hexdigest()[:16]

    def train(folder: pathlib.Path) -> None:
      from phd_jax.train.loop import train_and_evaluate
      summary = train_and_evaluate(cfg, str(folder / "run"))
      (folder / "summary.json").write_text(json.dumps(summary))
    return built_once(self.root, f"run-{key}", train)

  def __call__(self, cfg: ml_collections.ConfigDict) -> pathlib.Path:
    return self._folder(cfg) / "run"

  def summary(self, cfg: ml_collections.ConfigDict) -> dict:
    return json.loads((self._folder(cfg) / "summary.json").read_text())


def copy_run(workdir: pathlib.Path, to: pathlib.Path) -> pathlib.Path:
  """A copy of a shared run that a test may resume, damage or extend."""
  shutil.copytree(workdir, to)
  return to
