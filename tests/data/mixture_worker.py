"""Trains a mixture config in a subprocess (the device count is fixed by XLA_FLAGS before JAX
starts), recording every global batch fed to the train step; with a kill step it kills itself
with SIGKILL once that step is done: no handler, no final checkpoint, like `kill -9`.

  python tests/data/mixture_worker.py SOURCES_JSON WORKDIR RECORD [KILL_AT]
"""
import json
import os
import signal
import sys

import jax
import numpy as np

from phd_jax.cli.common import libraries_loaded
from phd_jax.train import loop
from tests.helpers import tiny_config


def mixture_config(sources: dict, **train):
  """The tiny model on a three-source mixture whose weights change at step 5."""
  cfg = tiny_config("", **{"steps": 8, "checkpoint_every": 3, "keep_checkpoints": 3,
                           "val_every": 4, **train})
  cfg.data.update(source="mixture", text_files="")
  cfg.data.mixture = {n: {"path": p, "weight": w}
                      for (n, p), w in zip(sorted(sources.items()), (3.0, 2.0, 1.0))}
  cfg.data.mixture_schedule = ((5, {"code": 0.0, "legal": 4.0}),)
  return cfg


def record_batches(path: str, patch=setattr) -> None:
  """Makes the training loop append each step's global batch (ids) to `path` as JSON lines,
  taken from the arguments of the real train step."""
  real = loop.start_session

  def start_session(cfg, workdir, *clock):
    run = real(cfg, workdir, *clock)
    step_fn, step = run.train_step, [run.start]

    def recorded(state, batch):
      step[0] += 1
      ids = {k: np.asarray(jax.device_get(v)).tolist() for k, v in batch.items()}
      with open(path, "a") as f:
        f.write(json.dumps({"step": step[0], **ids}) + "\n")
      return step_fn(state, batch)
    run.train_step = recorded
    return run
  patch(loop, "start_session", start_session)


def read_batches(path: str) -> dict:
  """{step: batch} of a record; a step recorded twice (a rerun) keeps its last batch."""
  with open(path) as f:
    return {r["step"]: r for r in map(json.loads, f)}


def main(sources: str, workdir: str, record: str, kill_at: str = "0") -> None:
  record_batches(record)

  def kill(step: int) -> None:
    if step == int(kill_at):
      os.kill(os.getpid(), signal.SIGKILL)
  loop.train_and_evaluate(mixture_config(json.loads(sources)), workdir, on_step=kill)
  print(f"RESULTS {json.dumps({'devices': jax.device_count()})}", flush=True)


if __name__ == "__main__":
  libraries_loaded()  # as the phd-* commands do
  main(*sys.argv[1:])
