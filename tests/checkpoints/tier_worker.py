"""Trains the tiny run with a node-local checkpoint tier in a subprocess and, once a step is done
and the node-local save before it complete, kills itself with SIGKILL: no handler, no final
checkpoint, like `kill -9` (test_checkpoint_tiers.py).

  python tests/checkpoints/tier_worker.py CORPUS_GLOB WORKDIR LOCAL_DIR KILL_AT
"""
import os
import signal
import sys

from phd_jax.cli.common import libraries_loaded
from phd_jax.train import loop
from tests.helpers import RESUMABLE_RUN, tiny_config


def tier_config(corpus_glob: str, local_dir: str, **train):
  """The resumable tiny run (8 steps; its losses are RESUMABLE_RUN's) with checkpoints in the
  workdir at 4 and 8 and node-local ones at 3 and 6."""
  return tiny_config(corpus_glob, **{**RESUMABLE_RUN, "checkpoint_every": 4,
                                     "local_checkpoint_every": 3,
                                     "local_checkpoint_dir": local_dir, **train})


def main(corpus_glob: str, workdir: str, local_dir: str, kill_at: str) -> None:
  real, sessions = loop.start_session, []

  def start_session(cfg, workdir, *clock):
    sessions.append(real(cfg, workdir, *clock))
    return sessions[-1]
  loop.start_session = start_session

  def kill(step: int) -> None:
    if step == int(kill_at):
      sessions[0].local.wait()  # the node-local save of an earlier step is complete
      os.kill(os.getpid(), signal.SIGKILL)
  loop.train_and_evaluate(tier_config(corpus_glob, local_dir), workdir, on_step=kill)


if __name__ == "__main__":
  libraries_loaded()  # as the phd-* commands do
  main(*sys.argv[1:])
