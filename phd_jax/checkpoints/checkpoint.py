"""Orbax checkpoints of the training state, the data iterator and the config, as one unit.

On a local disk orbax writes each step into a temporary directory and renames it when complete;
in a bucket, which cannot rename, it writes the step in place and adds its commit file last
(object_store.py). Either way a crash mid-save leaves the previous checkpoint intact and the
unfinished step recognisable; resume takes the newest complete one that loads.
A damaged step (truncated or corrupt files, a missing item) is skipped and named; training moves
it aside to checkpoints/STEP.damaged (never deleted), the read-only commands leave it in place.
A storage error while saving (disk full, quota) is one CheckpointSaveError, and orbax's and
tensorstore's background echoes of a failure raised to us are silenced; the next start removes
the failed save's temporary folder (in a bucket, its uncommitted step).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from phd_jax import config
from phd_jax import files as fs
from phd_jax.checkpoints import object_store, recovery
from phd_jax.checkpoints.data_state import DataRestore, DataSave, DataStateHandler
from phd_jax.checkpoints.workdir import temporary
from phd_jax.model.transformer import Transformer

Log = Callable[[str], None]


class CheckpointMismatchError(ValueError):
  """A checkpoint that does not fit the run: a model with other parameter shapes (in the workdir
  or in train.init_from), or model-only weights where a run is to be resumed. No damage: it
  propagates through `restore_newest` at once."""


class CheckpointSaveError(ValueError):
  """A checkpoint could not be written (disk full, quota, file size limit); the earlier ones are
  intact. A ValueError: the commands report it as one `error:` line."""


def warn(message: str) -> None:
  """The default `log` of the recovery messages: one line on stderr."""
  print(message, file=sys.stderr, flush=True)


class Checkpointer:
  """WORKDIR/checkpoints. `node_local`: a folder on each host's own disk (checkpoints/tiers.py),
  where every process writes the whole step alone (each shard it holds, its own config and
  metadata) and waits for no other; otherwise one folder all processes share, where process 0
  writes what is written once and each array shard is written by one process."""

  def __init__(self, workdir: str, keep: int, node_local: bool = False):
    self.directory = fs.join(fs.absolute(workdir), "checkpoints")
    self.node_local = node_local
    state, config_handler, alone = ocp.StandardCheckpointHandler(), ocp.JsonCheckpointHandler(), {}
    extra = {}
    if node_local:  # orbax's local-checkpoint settings (its experimental/emergency)
      alone = {"multiprocessing_options": ocp.options.MultiprocessingOptions(
          primary_host=None, active_processes={jax.process_index()},
          barrier_sync_key_prefix=f"node_local_{jax.process_index()}")}
      state = ocp.PyTreeCheckpointHandler(type_handler_registry=_every_shard_held(), **alone)
      config_handler = ocp.JsonCheckpointHandler(**alone)
      os.makedirs(self.directory, exist_ok=True)  # orbax creates none for a subset of processes
      # A step's folders made before its items are written: made in the background, they were
      # at times missing when an item was written (two hosts, a workdir save also in flight).
      extra["async_options"] = ocp.AsyncOptions(create_directories_asynchronously=False)
    self.manager = ocp.CheckpointManager(
        self.directory, options=object_store.manager_options(
            self.directory, max_to_keep=keep, create=not node_local, **alone, **extra),
        item_handlers={"state": state, "data": DataStateHandler(), "config": config_handler})
    recovery.quiet_echoes_of_failures()  # orbax's repeats of a failure raised to us
    self.failed: CheckpointSaveError | None = None  # the first save that could not be written
    self._saving: int | None = None  # the step of the latest save started
    self._closed = False

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def saved_config(self, step: int) -> ml_collections.ConfigDict:
    args = ocp.args.Composite(config=ocp.args.JsonRestore())
    return config.upgrade(self.manager.restore(step, args=args)["config"])  # renames, new fields

  def save(self, step: int, state: nnx.State, data_iter, cfg: ml_collections.ConfigDict) -> None:
    """data_iter None (an imported model): the run resuming from it starts its data afresh.

    Raises CheckpointSaveError on a storage error, here or (orbax saves in the background) at
    the next save, `wait` or `close`."""
    if self.failed:
      raise self.failed
    pure = nnx.to_pure_dict(state)
    items = dict(state=ocp.args.PyTreeSave(pure) if self.node_local else ocp.args.StandardSave(
        pure), config=ocp.args.JsonSave(cfg.to_dict()))
    if data_iter is not None:
      items["data"] = DataSave(data_iter)
    with self._storage_errors():
      self.manager.save(step, args=ocp.args.Composite(**items))
    self._saving = step

  def restore(self, step: int, state: nnx.State, data_iter=None) -> nnx.State:
    """Restores into the structure and shardings of `state`; advances `data_iter` in place.

    Arrays of `state` without a sharding (abstract ones, e.g. from nnx.eval_shape) land on this
    process's first device: a run saved on any mesh restores onto one device for inference.
    Model-only weights (`phd-hf import`) have no optimizer to resume: CheckpointMismatchError.
    """
    target = jax.tree.map(_restore_target, nnx.to_pure_dict(state))
    items = {"state": ocp.args.PyTreeRestore(target, ocp.checkpoint_utils.construct_restore_args(
        target)) if self.node_local else ocp.args.StandardRestore(target)}
    if data_iter is not None and fs.isdir(fs.join(self.directory, str(step), "data")):
      items["data"] = DataRestore(data_iter)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception:
      if self._model_only(step, target):
        workdir = fs.dirname(self.directory)
        raise CheckpointMismatchError(
            f"{workdir} holds model-only weights (step {step}, no optimizer state: what "
            "`phd-hf import` writes), not a run to resume: start a new run from them with "
            f"--config.train.init_from={workdir} and another --workdir. Nothing was changed."
            ) from None
      raise
    nnx.replace_by_pure_dict(state, restored["state"])
    return state

  def _model_only(self, step: int, target: dict) -> bool:
    """Whether the step holds the model (subtree 0) of `target` but not its optimizer (1)."""
    try:
      saved = set(self.manager.item_metadata(step)["state"])
    except Exception:  # damaged: the restore's own error says why
      return False
    return {str(k) for k in target} - saved == {"1"}

  def restore_params(self, step: int, model_state: nnx.State) -> nnx.State:
    """Only the model's arrays (item `state`, subtree 0) into `model_state`: inference reads a
    third of a training checkpoint (no optimizer moments), and holds no more in memory."""
    target = {0: jax.tree.map(_restore_target, nnx.to_pure_dict(model_state))}
    reader = ocp.CheckpointManager(self.directory, options=object_store.manager_options(
        self.directory), item_handlers={"state": ocp.PyTreeCheckpointHandler()})
    args = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(target))
    try:
      restored = reader.restore(step, args=ocp.args.Composite(state=args))["state"]
    finally:
      reader.close()
    nnx.replace_by_pure_dict(model_state, restored[0])
    return model_state

  def restore_newest(self, attempt: Callable[[int], Any], log: Log = warn,
                     move_aside: bool = True) -> tuple[int, Any] | None:
    """(step, attempt(step)) of the newest step whose `attempt` (reading its config, state,
    data position) succeeds; None without steps. See restore_first."""
    found = restore_first([(self, s) for s in sorted(self.manager.all_steps(), reverse=True)],
                          lambda _, step: attempt(step), log, move_aside)
    return found[1:] if found else None

  def _move_aside(self, step: int) -> str:
    """Renames the step's folder to STEP.damaged (STEP.damaged.1, ... if taken); its new path."""
    src = fs.join(self.directory, str(step))
    dest, n = src + ".damaged", 0
    while fs.exists(dest):
      n += 1
      dest = f"{src}.damaged.{n}"
    if jax.process_index() == 0 or self.node_local:
      try:
        fs.rename(src, dest)
      except OSError as e:
        raise ValueError(f"checkpoint step {step} in {self.directory} does not restore and "
                         f"could not be moved aside ({e.strerror}): move {src} away and rerun"
                         ) from None
    return dest

  def clean_temporaries(self, log: Log = warn) -> list[str]:
    """Removes what saves that never finished left (a crash, a full disk): orbax's temporary
    folders, in a bucket the steps without their commit file; a `log` line, the names removed.
    Only at a start, before anything is saved (every process calls it; process 0 removes, or
    each process from its own node-local folder)."""
    names = []
    if (jax.process_index() == 0 or self.node_local) and fs.isdir(self.directory):
      names = sorted(n for n in fs.listdir(self.directory) if temporary(self.directory, n))
      for name in names:
        fs.rmtree(fs.join(self.directory, name))
      if names:
        log(f"note: removed the unfinished checkpoint save(s) {', '.join(names)} from "
            f"{self.directory} (a save cut short by a crash or a storage error)")
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes("phd_jax_checkpoint_temporaries_cleaned")
    if not recovery.on_every_process(not names):
      self.manager.reload()  # an unfinished save in a bucket was listed as a step
    return names

  def wait(self) -> None:
    if not self.failed:
      with self._storage_errors():
        self.manager.wait_until_finished()

  def close(self) -> None:
    if self._closed:
      return
    if self.failed:
      self._abandon()
      return
    with self._storage_errors():
      self.manager.close()
    self._closed = True

  @contextlib.contextmanager
  def _storage_errors(self):
    """A storage error from orbax becomes a CheckpointSaveError (kept in self.failed)."""
    try:
      yield
    except Exception as e:
      cause = recovery.storage_cause(e)
      if cause is None:
        raise
      self.failed = self._save_error(cause)
      recovery.mark_failed(self.directory)
      self._abandon()
      raise self.failed from e

  def _abandon(self) -> None:  # after a failed save: its further complaints repeat the failure
    if not self._closed:
      self._closed = True
      with contextlib.suppress(Exception):
        self.manager.close()

  def _save_error(self, cause: BaseException) -> CheckpointSaveError:
    text = str(cause)
    tmp = re.search(r"/(\d+)\.orbax-checkpoint-tmp", text)
    step = int(tmp.group(1)) if tmp else self._saving
    code = cause.errno if isinstance(cause, OSError) else None
    if found := re.search(r"os_error_code=\\?'?(\d+)", text):  # tensorstore's
      code = int(found.group(1))
    why = (f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
           if code in recovery.STORAGE_ERRNOS else recovery.reason(cause, self.directory))
    kept = sorted(int(n) for n in fs.listdir(self.directory)
                  if n.isdigit() and int(n) != step) if fs.isdir(self.directory) else []
    intact = (f"the earlier checkpoints are intact (newest: step {kept[-1]})" if kept else
              "no earlier checkpoint was written")
    return CheckpointSaveError(
        f"could not save the checkpoint of step {step} in {self.directory}: {why}; {intact}. "
        "Free some space (or raise the quota or file size limit) and run the same command "
        "again: it resumes from the newest intact checkpoint and removes the unfinished save")


Candidate = tuple[Checkpointer, int]  # a step of one checkpoint folder


def restore_first(candidates: list[Candidate], attempt: Callable[[Checkpointer, int], Any],
                  log: Log = warn, move_aside: bool = True) -> tuple[Checkpointer, int, Any] | None:
  """(checkpointer, step, attempt(checkpointer, step)) of the first candidate whose `attempt`
  succeeds on every process; None without candidates. Once one succeeded, each earlier one that
  failed is named in a `log` line with the reason and, with `move_aside` (training), renamed to
  STEP.damaged in its folder. If none succeeds (a changed optimizer, say, or every step damaged)
  nothing is moved: a ValueError names each step's reason. A CheckpointMismatchError, or
  running out of memory, is no damage: it propagates at once."""
  failed: list[tuple[Checkpointer, int, str]] = []
  for ckpt, step in candidates:
    reason = None
    try:
      with recovery.attempt(ckpt.directory):  # orbax's echoes of a failure: dropped
        result = attempt(ckpt, step)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # orbax, tensorstore and JSON raise all kinds; Ctrl-C passes
      if recovery.out_of_memory(e):
        raise
      reason = recovery.reason(e, ckpt.directory)
    if not recovery.on_every_process(reason is None):
      failed.append((ckpt, step, reason or "it does not restore on another process"))
      continue
    where = "" if all(c is ckpt for c, _, _ in failed) else f" in {ckpt.directory}"
    for bad_ckpt, bad, why in failed:
      then = (f"moved it aside to {bad_ckpt._move_aside(bad)} (kept, never deleted) and restored "
              f"step {step}{where}" if move_aside else f"using step {step}{where} instead (left "
              "in place: the next phd-train run moves it aside)")
      log(f"warning: checkpoint step {bad} in {bad_ckpt.directory} does not restore ({why}); "
          f"{then}")
    if failed and move_aside:
      if jax.process_count() > 1:
        ocp.multihost.sync_global_processes("phd_jax_damaged_checkpoints_moved")
      for moved in {id(c): c for c, _, _ in failed}.values():
        moved.manager.reload()  # the moved steps are no longer listed, saved over or counted
    return ckpt, step, result
  if failed:
    folders = sorted({c.directory for c, _, _ in failed})
    raise ValueError(
        f"no checkpoint in {' or '.join(folders)} restores: "
        + "; ".join(f"step {s}{f' in {c.directory}' if len(folders) > 1 else ''}: {why}"
                    for c, s, why in failed)
        + ". Nothing was moved or deleted. If the files are damaged, restore them from a "
        "backup, or move the checkpoints folder away to start over; if the config changed "
        "(e.g. the optimizer), train with the config the run was saved with")
  return None


def saved_run_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config of the newest checkpoint in `workdir` whose config reads; None if it has none.
  (The training start that follows names and moves aside the steps that do not restore.)"""
  if not fs.isdir(fs.join(workdir, "checkpoints")):
    return None
  ckpt = Checkpointer(workdir, keep=1)
  try:
    found = ckpt.restore_newest(ckpt.saved_config, log=lambda _: None, move_aside=False)
  finally:
    ckpt.close()
  return found[1] if found else None


def _every_shard_held():
  """A node-local folder's array writer: each process writes every shard it holds, once (orbax's
  replica_id None), not only the shards of replica 0, which other hosts may hold."""
  return ocp.type_handlers.create_type_handler_registry((jax.Array, ocp.type_handlers.ArrayHandler(
      primary_host=None, replica_id=None, use_replica_parallel=False)))


def _restore_target(x) -> jax.ShapeDtypeStruct:
  target = ocp.utils.to_shape_dtype_struct(x)
  if getattr(target, "sharding", None) is None:
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.ShapeDtypeStruct(target.shape, target.dtype, sharding=one)
  return target


def param_shapes(model_cfg: ml_collections.ConfigDict) -> dict:
  """{parameter path: shape} of a model config, without allocating it."""
  abstract = nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(0)))
  flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
  return {"/".join(map(str, path)): tuple(v.shape) for path, v in flat}


def check_compatible(workdir: str, step: int, saved: ml_collections.ConfigDict,
                     current: ml_collections.ConfigDict) -> list[str]:
  """Raises CheckpointMismatchError if shapes differ; returns the model fields that changed."""
  changes, reshaping = model_changes(saved.model, current.model)
  changed = describe(changes, "checkpoint")
  if reshaping:
    raise CheckpointMismatchError(
        f"workdir {workdir} holds a checkpoint (step {step}) of a model with other parameter "
        f"shapes; changed fields: {'; '.join(changed)}. Use another --workdir, or delete "
        f"{fs.join(workdir, 'checkpoints')} to start over. Nothing was overwritten.")
  return changed


Change = tuple[str, Any, Any]  # (field path, e.g. "model.d_model", saved value, current value)


def model_changes(saved: ml_collections.ConfigDict, current: ml_collections.ConfigDict
                  ) -> tuple[list[Change], list[Change]]:
  """Two model configs compared: (every field that differs; those among them that change the
  parameter shapes, empty when the shapes are equal). A field counts as changing the shapes when
  setting it alone in `current` to its saved value does; if none does alone, all are named."""
  changes = _diff(saved.to_dict(), current.to_dict(), "model")
  shapes = param_shapes(current)
  if param_shapes(saved) == shapes:
    return changes, []
  return changes, [c for c in changes if _reshapes(current, c, shapes)] or changes


def describe(changes: list[Change], source: str) -> list[str]:
  """'model.d_model: SOURCE 64, config 96' for each change."""
  return [f"{path}: {source} {a!r}, config {b!r}" for path, a, b in changes]


def _reshapes(model_cfg: ml_collections.ConfigDict, change: Change, shapes: dict) -> bool:
  """Whether undoing `change` alone changes the shapes: so a refusal names num_layers, not the
  PHD variant that may differ beside it."""
  path, saved_value, _ = change
  m = ml_collections.ConfigDict(model_cfg.to_dict())
  *parents, leaf = path.split(".")[1:]
  node = m
  for name in parents:
    node = node[name]
  try:
    with m.ignore_type():
      node[leaf] = saved_value
    return param_shapes(m) != shapes
  except Exception:  # an invalid combination on its own (num_heads without num_kv_heads): no sign
    return False


def _diff(a: dict, b: dict, prefix: str) -> list[Change]:
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key), b.get(key)
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _diff(va, vb, f"{prefix}.{key}")
    elif va != vb:
      out.append((f"{prefix}.{key}", va, vb))
  return out
