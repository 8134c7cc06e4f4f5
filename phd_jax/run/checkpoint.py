"""Orbax checkpoints of the training state, the data iterator and the config, as one unit.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-save leaves the previous checkpoint intact; resume always takes the latest complete one.
"""
from __future__ import annotations

import os

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from phd_jax import config
from phd_jax.model.transformer import Transformer


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of a model with other parameter shapes."""


class Checkpointer:

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def saved_config(self, step: int) -> ml_collections.ConfigDict:
    args = ocp.args.Composite(config=ocp.args.JsonRestore())
    return config.upgrade(self.manager.restore(step, args=args)["config"])  # renames, new fields

  def save(self, step: int, state: nnx.State, data_iter, cfg: ml_collections.ConfigDict) -> None:
    """data_iter None (an imported model): the run resuming from it starts its data afresh."""
    items = dict(state=ocp.args.StandardSave(nnx.to_pure_dict(state)),
                 config=ocp.args.JsonSave(cfg.to_dict()))
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items))

  def restore(self, step: int, state: nnx.State, data_iter=None) -> nnx.State:
    """Restores into the structure and shardings of `state`; advances `data_iter` in place.

    Arrays of `state` without a sharding (abstract ones, e.g. from nnx.eval_shape) land on this
    process's first device: a run saved on any mesh restores onto one device for inference.
    """
    target = jax.tree.map(_restore_target, nnx.to_pure_dict(state))
    items = {"state": ocp.args.StandardRestore(target)}
    if data_iter is not None and os.path.isdir(os.path.join(self.directory, str(step), "data")):
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    nnx.replace_by_pure_dict(state, restored["state"])
    return state

  def restore_params(self, step: int, model_state: nnx.State) -> nnx.State:
    """Only the model's arrays (item `state`, subtree 0) into `model_state`: inference reads a
    third of a training checkpoint (no optimizer moments), and holds no more in memory."""
    target = {0: jax.tree.map(_restore_target, nnx.to_pure_dict(model_state))}
    reader = ocp.CheckpointManager(self.directory,
                                   item_handlers={"state": ocp.PyTreeCheckpointHandler()})
    args = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(target))
    restored = reader.restore(step, args=ocp.args.Composite(state=args))["state"]
    reader.close()
    nnx.replace_by_pure_dict(model_state, restored[0])
    return model_state

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def saved_run_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config of the latest checkpoint in `workdir`; None if it has none."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  ckpt = Checkpointer(workdir, keep=1)
  step = ckpt.latest_step()
  cfg = None if step is None else ckpt.saved_config(step)
  ckpt.close()
  return cfg


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
  changed = _diff(saved.model.to_dict(), current.model.to_dict(), "model")
  if param_shapes(saved.model) != param_shapes(current.model):
    raise CheckpointMismatchError(
        f"workdir {workdir} holds a checkpoint (step {step}) of a model with other parameter "
        f"shapes; changed fields: {'; '.join(changed)}. Use another --workdir, or delete "
        f"{os.path.join(workdir, 'checkpoints')} to start over. Nothing was overwritten.")
  return changed


def _diff(a: dict, b: dict, prefix: str) -> list[str]:
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key), b.get(key)
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _diff(va, vb, f"{prefix}.{key}")
    elif va != vb:
      out.append(f"{prefix}.{key}: checkpoint {va!r}, config {vb!r}")
  return out
