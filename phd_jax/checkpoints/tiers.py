"""Two checkpoint tiers: frequent saves to a node-local folder, rarer ones to the workdir.

On preemptible machines a preemption costs the steps since the last checkpoint. Saves to a disk
of the host itself (train.local_checkpoint_dir, every train.local_checkpoint_every steps) are
cheap; the workdir's checkpoints (train.checkpoint_every, local or in a bucket) stay the run's
record, and a preemption stop saves there. The node-local tier keeps its newest
train.keep_local_checkpoints steps and never saves a step the workdir saves.

Where: LOCAL_DIR/<workdir's name>-<key>/checkpoints, the key a hash of the workdir's absolute
path and a random token kept in WORKDIR/local_checkpoints.key. Two runs sharing a node-local
folder never see each other's steps; nor does a new run in a deleted and recreated workdir (a new
token), nor a copy of a workdir (another path).

Which step a start resumes from: the newest of (a) the node-local steps newer than the workdir's
newest that every host holds, and (b) the workdir's steps, that restores on every host, trying
them newest first (Checkpointer's damaged-step fallback, across both tiers). Each host lists its
complete node-local steps; the lists are exchanged (process_allgather of a fixed-size array, the
newest MAX_LISTED) and only the steps in all of them count. A node-local step newer than the one
restored is deleted on every host: it is from a timeline that was not resumed.

Hosts: each process saves the whole step on its own disk, alone (orbax's local-checkpoint
settings: every process primary, every shard it holds written). So each host's folder restores on
its own only if the host holds a whole copy of the state: data parallelism across hosts (any
sharding within a host) is supported; a state sharded across hosts (fsdp or tensor axes spanning
hosts) is refused at the start.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from phd_jax import files as fs
from phd_jax.checkpoints import recovery
from phd_jax.checkpoints.checkpoint import Checkpointer, Log, restore_first

KEY_FILE = "local_checkpoints.key"  # in the workdir: the token of the run's node-local folders
MAX_LISTED = 64  # node-local steps per host compared across hosts (the newest)


def local_due(t: ml_collections.ConfigDict, step: int, stop: bool) -> bool:
  """Whether the node-local tier saves after `step`: every local_checkpoint_every steps, except
  where the workdir saves (its checkpoint_every steps, the last step, a preemption stop)."""
  return (bool(t.local_checkpoint_every) and not stop and step % t.local_checkpoint_every == 0
          and step % t.checkpoint_every != 0 and step != t.steps)


def open_local(cfg: ml_collections.ConfigDict, workdir: str, state: nnx.State,
               log: Log) -> Checkpointer | None:
  """The run's node-local tier (None when train.local_checkpoint_every is 0), its unfinished
  saves removed. Every process calls it; raises ValueError where it cannot restore."""
  t = cfg.train
  if not t.local_checkpoint_every:
    return None
  _check_whole_on_each_host(state)
  if _SIZE_NOTE not in logging.getLogger("absl").filters:
    logging.getLogger("absl").addFilter(_SIZE_NOTE)
  ckpt = Checkpointer(run_folder(t.local_checkpoint_dir, workdir), t.keep_local_checkpoints,
                      node_local=True)
  ckpt.clean_temporaries(log)
  return ckpt


class _SizeNote(logging.Filter):
  """Drops orbax's warning, at every node-local save, that with every process primary it logs
  no global size: that is the tier's design, not a fault."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Global object size logging disabled")


_SIZE_NOTE = _SizeNote()


def run_folder(local_dir: str, workdir: str) -> str:
  """LOCAL_DIR/<workdir's name>-<key>: this run's node-local folder on this host, made, with a
  workdir.txt naming the run. Process 0 makes the workdir's token once."""
  key_path = fs.join(workdir, KEY_FILE)
  if jax.process_index() == 0 and not fs.exists(key_path):
    fs.write_text(key_path, secrets.token_hex(16) + "\n")
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes("phd_jax_local_checkpoints_key")
  token = fs.read_text(key_path).strip()
  key = hashlib.sha256(f"{workdir}\n{token}".encode()).hexdigest()[:16]
  folder = os.path.join(os.path.abspath(local_dir), f"{fs.basename(workdir) or 'run'}-{key}")
  try:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "workdir.txt"), "w") as f:
      f.write(workdir + "\n")
  except OSError as e:
    raise ValueError(f"config.train.local_checkpoint_dir={local_dir!r} is not writable "
                     f"({e.strerror}): give a folder on this host's disk") from None
  return folder


def restore_newest(persistent: Checkpointer, local: Checkpointer | None,
                   attempt: Callable[[Checkpointer, int], Any], log: Log
                   ) -> tuple[Checkpointer, int, Any] | None:
  """(tier, step, attempt(tier, step)) of the newest step that restores from either tier (the
  rule in the module's docstring); None for a new run. Every process calls it."""
  steps = sorted(persistent.manager.all_steps(), reverse=True)
  candidates = [(persistent, s) for s in steps]
  if local is not None:
    newer = [s for s in common_steps(local.manager.all_steps()) if s > (steps or [0])[0]]
    candidates = [(local, s) for s in newer] + candidates
  found = restore_first(candidates, attempt, log)
  if local is not None:
    _drop_after(local, found[1] if found else 0, log)
  return found


def common_steps(steps: list[int]) -> list[int]:
  """The node-local steps every host holds, newest first (one collective on several hosts)."""
  mine = sorted(steps, reverse=True)[:MAX_LISTED]
  if jax.process_count() == 1:
    return mine
  from jax.experimental import multihost_utils
  row = np.full(MAX_LISTED, -1, np.int32)
  row[:len(mine)] = mine
  return newest_common(np.asarray(multihost_utils.process_allgather(row)))


def newest_common(rows: np.ndarray) -> list[int]:
  """rows: [hosts, MAX_LISTED] steps, -1 padded -> the steps in every row, newest first."""
  held = [set(r[r >= 0].tolist()) for r in rows]
  return sorted(set.intersection(*held), reverse=True)


def describe(tier: Checkpointer, local: Checkpointer | None) -> str:
  """Which tier a start resumed from, for its `resumed from step N` line ('' with one tier)."""
  if local is None:
    return ""
  return (f" (its node-local checkpoint in {local.directory})" if tier is local
          else " (its workdir checkpoint; no newer node-local step restores on every host)")


def _drop_after(local: Checkpointer, step: int, log: Log) -> None:
  """Deletes the node-local steps newer than the one resumed (on each host, its own)."""
  newer = sorted(s for s in local.manager.all_steps() if s > step)
  for s in newer:
    local.manager.delete(s)
  if newer:
    log(f"note: deleted node-local checkpoint step(s) {', '.join(map(str, newer))} in "
        f"{local.directory}: newer than step {step}, which the run resumes from (not on every "
        "host, or damaged)")


def _check_whole_on_each_host(state: nnx.State) -> None:
  """Refuses a state that some host does not hold whole: its node-local folder would not
  restore on its own (the same answer on every process)."""
  whole = all(_held_whole(x) for x in jax.tree.leaves(nnx.to_pure_dict(state)))
  if not recovery.on_every_process(whole):
    raise ValueError(
        "config.train.local_checkpoint_every: the node-local tier needs a whole copy of the "
        "training state on every host, but config.mesh shards it across hosts (its fsdp or "
        "tensor axis spans hosts). Keep those axes within a host (data parallelism across "
        "hosts), or set config.train.local_checkpoint_every=0")


def _held_whole(x: jax.Array) -> bool:
  """Whether this process's devices together hold every element of `x`."""
  if jax.process_count() == 1:
    return True
  blocks = {tuple(s.indices(n) for s, n in zip(index, x.shape))
            for index in x.sharding.addressable_devices_indices_map(x.shape).values()}
  held = sum(math.prod(len(range(*s)) for s in block) for block in blocks)
  return held == math.prod(x.shape)  # a grid of equal blocks: distinct blocks do not overlap
