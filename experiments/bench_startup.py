"""CPU time of a short phd-train run, with the commands' garbage-collector setting and without.

The phd-* commands call phd_jax/cli/common.py's `libraries_loaded()` once JAX and the library are
imported (gc.freeze). Each round runs the same tiny training run (the tests'
one-layer tiny model, 8 steps, on a generated corpus) twice, in fresh processes: once as the
command runs, once with `libraries_loaded` made a no-op (Python's defaults). Both share a
compilation cache, warmed first, so each measures what a short rerun pays: imports, tracing,
lowering and the steps. The runs alternate, so machine noise hits both alike; the last line gives
the median CPU seconds (user + system, the process and its children) of each and their ratio.

  python -m experiments.bench_startup [--rounds=4]
"""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile

from absl import flags

from experiments import cli
from phd_jax.cli import common

_ROUNDS = flags.DEFINE_integer("rounds", 4, "Alternating rounds (the median is reported).")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = """import sys
import phd_jax.cli.common
if sys.argv.pop(1) == "defaults":
  phd_jax.cli.common.libraries_loaded = lambda: None
sys.argv[0] = "phd-train"
from phd_jax.cli.train import main
main()
"""
TRAIN = dict(steps=8, batch_size=4, seq_len=32, val_every=100, val_batches=2, checkpoint_every=100,
             log_every=1, warmup_steps=2, sample_tokens=0)


def write_corpus(folder: str) -> str:
  words = "def return self import class for in if else value".split()
  for i in range(4):
    lines = [" ".join(words[(i + j + k) % len(words)] for k in range(6)) + ":" for j in range(200)]
    with open(os.path.join(folder, f"file{i}.txt"), "w") as f:
      f.write("\n".join(lines))
  return os.path.join(folder, "*.txt")


def cpu_seconds(gc_setting: str, flags_: list[str], workdir: str, env: dict) -> float:
  """CPU seconds of one phd-train run in a fresh process (its children included)."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  subprocess.run([sys.executable, "-c", RUN, gc_setting, *flags_, f"--workdir={workdir}"],
                 cwd=ROOT, env=env, check=True, capture_output=True)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  rounds = cli.at_least(_ROUNDS, 1)
  with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
    corpus = write_corpus(tmp)
    flags_ = [f"--config={ROOT}/configs/model_tiny.py:phd_cswa", "--config.model.num_layers=1",
              "--config.data.source=text_files", f"--config.data.text_files={corpus}",
              *(f"--config.train.{k}={v}" for k, v in TRAIN.items())]
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(tmp, "jit_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    times: dict[str, list[float]] = {"command": [], "defaults": []}
    cpu_seconds("command", flags_, os.path.join(tmp, "warm"), env)  # fills the compile cache
    for r in range(rounds):
      for name, got in times.items():
        got.append(cpu_seconds(name, flags_, os.path.join(tmp, f"{name}{r}"), env))
        print(f"round {r + 1}/{rounds} {name}: {got[-1]:.2f} s of CPU", flush=True)
  med = {name: statistics.median(got) for name, got in times.items()}
  print(f"median CPU s: command={med['command']:.2f} defaults={med['defaults']:.2f} "
        f"ratio={med['command'] / med['defaults']:.3f}")


if __name__ == "__main__":
  common.launch(main)
