"""Trains the tiny run in a process of its own, accounting its time from the process's start as
phd-train does, and kills itself with SIGKILL once step KILL_AT is done: no handler, no final
record or checkpoint, like `kill -9`. Before the kill it waits for the checkpoint SAVED_STEP's
save (asynchronous) to finish, so the rerun resumes from it whatever the machine's speed.

  python tests/train/goodput_worker.py CORPUS_GLOB WORKDIR KILL_AT SAVED_STEP TRAIN_JSON
"""
import json
import os
import signal
import sys
import time

from phd_jax.cli.common import libraries_loaded
from phd_jax.train import goodput
from phd_jax.train.loop import train_and_evaluate
from tests.helpers import tiny_config


def main(corpus_glob: str, workdir: str, kill_at: str, saved_step: str, train: str) -> None:
  def kill(step: int) -> None:
    if step == int(kill_at):
      saved, deadline = os.path.join(workdir, "checkpoints", saved_step), time.time() + 300
      while not os.path.isdir(saved) and time.time() < deadline:  # orbax renames it when done
        time.sleep(0.05)
      os.kill(os.getpid(), signal.SIGKILL)
  train_and_evaluate(tiny_config(corpus_glob, **json.loads(train)), workdir, on_step=kill,
                     started=goodput.process_start())


if __name__ == "__main__":
  libraries_loaded()  # as the phd-* commands do
  main(*sys.argv[1:])
