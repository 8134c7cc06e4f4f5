"""One of two processes of a real multi-host run on 127.0.0.1 (see test_scaling.py).

argv: corpus glob, workdir, coordinator port, process id[, "preempt" | "tiers" LOCAL_BASE].
Prints one JSON line (process 0; with "preempt" or "tiers", every process).
"""
import faulthandler
import json
import os
import signal
import sys

import jax

from phd_jax.cli.common import libraries_loaded
from phd_jax.model import sharding


def main(corpus_glob: str, workdir: str, port: str, process_id: str, mode: str = "",
         local_base: str = "") -> None:
  # A process that stalls (the other then times out at a barrier) shows where: every thread's
  # stack on stderr every 120 s, which the test prints when a process fails.
  faulthandler.dump_traceback_later(120, repeat=True)
  sharding.initialize_distributed(f"127.0.0.1:{port}", 2, int(process_id))
  if mode == "tiers":
    return tiers(corpus_glob, workdir, os.path.join(local_base, f"host{process_id}"))
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


def tiers(corpus_glob: str, workdir: str, local: str) -> None:
  """The node-local tier on two hosts, each with its own folder: workdir checkpoint 3, node-local
  2 and 4. Resumes from 4 (both hold it); after host 1 lost its folder, from 3; a state sharded
  across the hosts is refused."""
  import glob
  import shutil

  from phd_jax.train import loop
  from tests.helpers import Preempted, preempt_after, tiny_config
  real, starts = loop.start_session, []

  def start_session(cfg, workdir, *clock):
    session = real(cfg, workdir, *clock)
    starts.append(session.start)
    return session
  loop.start_session = start_session
  cfg = tiny_config(corpus_glob, steps=6, batch_size=8, checkpoint_every=3,
                    local_checkpoint_every=2, local_checkpoint_dir=local)
  held = lambda: sorted(int(os.path.basename(p)) for p in glob.glob(f"{local}/*/checkpoints/*")
                        if os.path.basename(p).isdigit())
  for _ in range(2):  # cut after step 5, twice
    try:
      loop.train_and_evaluate(cfg, workdir, on_step=preempt_after(5))
    except Preempted:
      pass
  both = held()
  if jax.process_index() == 1:
    shutil.rmtree(local)  # a replaced host
  loop.train_and_evaluate(cfg, workdir)
  cfg.mesh.update(data=1, fsdp=-1)  # the state sharded over all 8 devices of both hosts
  try:
    loop.train_and_evaluate(cfg, workdir + "_fsdp")
    refused = ""
  except ValueError as e:
    refused = str(e)
  print("RESULTS " + json.dumps({"starts": starts, "both": both, "after": held(),
                                 "refused": refused}), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  libraries_loaded()  # as the phd-* commands do
  main(*sys.argv[1:])
