"""Checks a --workdir before anything is built: a file, an unwritable folder, an unreachable
bucket or someone else's checkpoints fail with one clear line instead of a traceback from deep
inside orbax.
"""
from __future__ import annotations

import os
import re
import tempfile

from phd_jax import files as fs
from phd_jax.checkpoints import object_store

ORBAX_TMP = re.compile(r".*\.orbax-checkpoint-tmp.*")
DAMAGED = re.compile(r"\d+\.damaged(\.\d+)?")  # steps that did not restore, moved aside
ITEMS = ("state", "config")  # what every phd_jax checkpoint step holds (see checkpoint.py)


def check_workdir(workdir: str) -> str:
  """The workdir's absolute path (a URL as it is), checked before anything reads it or is
  built; creates nothing (create_workdir does). Raises ValueError if unusable: a file, a bucket
  out of reach or not writable (one probe), or someone else's checkpoints."""
  workdir = fs.absolute(workdir)
  if fs.is_url(workdir):
    fs.check_access(workdir, "--workdir", write=True)
  elif os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir} is a file, not a directory: give a directory path")
  _check_checkpoints(fs.join(workdir, "checkpoints"))
  return workdir


def create_workdir(workdir: str) -> None:
  """Creates a local workdir checked by check_workdir and proves it writable; nothing for a
  bucket (check_workdir wrote there, and nothing local is ever created for a URL)."""
  if fs.is_url(workdir):
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ValueError(f"--workdir {workdir} is not writable ({e.strerror}): give a directory "
                     "you can write to") from None


def _check_checkpoints(directory: str) -> None:
  """WORKDIR/checkpoints holds only step folders of this program, orbax's temporaries and the
  damaged steps moved aside; a step folder that lost an item (orbax's _CHECKPOINT_METADATA and
  another item still there) is ours, damaged: the restore skips it and moves it aside."""
  if not fs.exists(directory):
    return
  if not fs.isdir(directory):
    raise ValueError(f"{directory} is a file; a workdir's checkpoints/ must be the directory "
                     "this program writes. Move it away or use another --workdir")
  for name in sorted(fs.listdir(directory)):
    path = fs.join(directory, name)
    if temporary(directory, name) or (DAMAGED.fullmatch(name) and fs.isdir(path)):
      continue
    has = [fs.isdir(fs.join(path, item)) for item in ITEMS]
    damaged = any(has) and fs.isfile(fs.join(path, "_CHECKPOINT_METADATA"))
    ours = name.isdigit() and fs.isdir(path) and (all(has) or damaged)
    if not ours:
      raise ValueError(
          f"{path} is not a phd_jax checkpoint (expected step folders holding {ITEMS}): this "
          "workdir was written by another program. Use another --workdir; nothing was changed")


def temporary(directory: str, name: str) -> bool:
  """Whether `name` in the checkpoints folder is an unfinished save: orbax's temporary folder
  locally, a step without its commit file in a bucket."""
  return bool(ORBAX_TMP.fullmatch(name)) or object_store.unfinished(directory, name)
