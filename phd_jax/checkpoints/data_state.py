"""The training data's position as a checkpoint item (orbax), readable on any number of hosts.

The position (phd_jax/data/sampling.py: a batch index and an anchor) is global: every host holds
the same one. Each process writes it as process_I-of-N.json, grain's own layout, so a checkpoint
written before data mixtures (grain's {"next_index"}) reads the same way; restoring reads this
process's file, or when the run now has another number of hosts, process 0's of the old count.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


class DataStateHandler(ocp.CheckpointHandler):
  """Saves `item.get_state()` (a JSON-able dict) and restores it with `item.set_state`."""

  def save(self, directory: epath.Path, item=None, args: DataSave | None = None) -> None:
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    (directory / name).write_text(json.dumps((item or args.item).get_state(), indent=1))

  def restore(self, directory: epath.Path, item=None, args: DataRestore | None = None) -> Any:
    item = item or args.item
    own = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    found = [own] if own.exists() else sorted(
        p for p in directory.iterdir() if p.name.startswith("process_0-of-"))
    if not found:
      raise ValueError(f"{directory} holds no data position (process_*-of-*.json)")
    item.set_state(json.loads(found[0].read_text()))
    return item

  def metadata(self, directory: epath.Path) -> None:
    return None

  def finalize(self, directory: epath.Path) -> None:
    pass

  def close(self) -> None:
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataRestore(ocp.args.CheckpointArgs):
  item: Any
