"""Checks a --workdir before anything is built: a file, an unwritable folder or someone else's
checkpoints fail with one clear line instead of a traceback from deep inside orbax.
"""
from __future__ import annotations

import os
import re
import tempfile

ORBAX_TMP = re.compile(r".*\.orbax-checkpoint-tmp.*")
DAMAGED = re.compile(r"\d+\.damaged(\.\d+)?")  # steps that did not restore, moved aside
ITEMS = ("state", "config")  # what every phd_jax checkpoint step holds (see checkpoint.py)


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir if needed and returns its absolute path; raises ValueError if unusable."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir} is a file, not a directory: give a directory path")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ValueError(f"--workdir {workdir} is not writable ({e.strerror}): give a directory "
                     "you can write to") from None
  _check_checkpoints(os.path.join(workdir, "checkpoints"))
  return workdir


def _check_checkpoints(directory: str) -> None:
  """WORKDIR/checkpoints holds only step folders of this program, orbax's temporaries and the
  damaged steps moved aside; a step folder that lost an item (orbax's _CHECKPOINT_METADATA and
  another item still there) is ours, damaged: the restore skips it and moves it aside."""
  if not os.path.exists(directory):
    return
  if not os.path.isdir(directory):
    raise ValueError(f"{directory} is a file; a workdir's checkpoints/ must be the directory "
                     "this program writes. Move it away or use another --workdir")
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if ORBAX_TMP.fullmatch(name) or (DAMAGED.fullmatch(name) and os.path.isdir(path)):
      continue
    has = [os.path.isdir(os.path.join(path, item)) for item in ITEMS]
    damaged = any(has) and os.path.isfile(os.path.join(path, "_CHECKPOINT_METADATA"))
    ours = name.isdigit() and os.path.isdir(path) and (all(has) or damaged)
    if not ours:
      raise ValueError(
          f"{path} is not a phd_jax checkpoint (expected step folders holding {ITEMS}): this "
          "workdir was written by another program. Use another --workdir; nothing was changed")
