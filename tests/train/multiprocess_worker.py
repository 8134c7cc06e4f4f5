"""One of two processes of a real multi-host run on 127.0.0.1 (see test_scaling.py).

argv: corpus glob, workdir, coordinator port, process id[, "preempt"]. Prints one JSON line
(process 0; with "preempt", every process).
"""
import json
import os
import signal
import sys

import jax

from phd_jax.model import sharding


def main(corpus_glob: str, workdir: str, port: str, process_id: str, mode: str = "") -> None:
  sharding.initialize_distributed(f"127.0.0.1:{port}", 2, int(process_id))
  from phd_jax.train.loop import train_and_evaluate  # after initialize: the device list is global
  from tests.helpers import WIDE_RUN, losses, tiny_config
  if mode == "preempt":  # SIGTERM to process 1 only: both must stop and save at one step
    cfg = tiny_config(corpus_glob, steps=300, batch_size=8, checkpoint_every=1000)
    notice = lambda step: os.kill(os.getpid(), signal.SIGTERM) if step == 3 else None
    summary = train_and_evaluate(cfg, workdir, on_step=notice if process_id == "1" else None)
    from phd_jax.checkpoints.checkpoint import Checkpointer
    print("RESULTS " + json.dumps({"summary": summary,
                                   "latest": Checkpointer(workdir, 2).latest_step()}), flush=True)
    jax.distributed.shutdown()
    return
  cfg = tiny_config(corpus_glob, **WIDE_RUN)  # mesh data=-1: all 8 devices
  first = train_and_evaluate(cfg, workdir)
  again = train_and_evaluate(cfg, workdir)  # restores the step-4 checkpoint, nothing to train
  if jax.process_index() == 0:
    print("RESULTS " + json.dumps({"devices": jax.device_count(), "processes": jax.process_count(),
                                   "losses": losses(workdir), "val": first["val_bits_per_byte"],
                                   "val_restored": again["val_bits_per_byte"]}), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
