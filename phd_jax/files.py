"""Files and paths, in one place: globs, the deterministic hash split, atomic writes.

Every reader and writer of the project goes through these few functions, so the rules hold
everywhere alike: a comma-separated list of globs means the same thing for training data, token
files, prepare's input and BPE training; a file split into train/val by a hash of its name lands
on the same side on every machine; and no reader ever sees a half-written file (a write goes to
a temporary name beside its target and is renamed over it when complete, so a crash leaves the
previous version). Paths are plain strings throughout, so callers never build paths themselves
beyond `join`.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from typing import IO

TMP_SUFFIX = ".tmp"


def join(*parts: str) -> str:
  return os.path.join(*parts)


def expand(patterns: str) -> list[str]:
  """'a/*.txt, b/**/*.json' -> the sorted, de-duplicated files those globs match (`**` recurses;
  directories are left out)."""
  found = {f for g in patterns.split(",") if g.strip()
           for f in glob.glob(g.strip(), recursive=True) if os.path.isfile(f)}
  return sorted(found)


def hash_fraction(key: str | bytes) -> float:
  """A number in [0, 1) fixed by `key` alone: the same on every machine and Python version."""
  data = key.encode("utf-8") if isinstance(key, str) else key
  return int.from_bytes(hashlib.sha1(data).digest()[:8], "big") / 2**64


def held_out(key: str | bytes, fraction: float) -> bool:
  """Whether `key` (a file's relative path, a document's text) goes to validation."""
  return hash_fraction(key) < fraction


def split_files(files: Sequence[str], fraction: float, root: str | None = None) -> list[bool]:
  """Validation flags of `files` by a hash of each one's path relative to `root` (default: their
  common folder).

  Relative paths keep the split the same wherever the corpus lies. When the hash puts every
  file on one side (few files), the last file alone is held out, so both sides are non-empty.
  """
  if root is None:
    root = os.path.commonpath(files) if len(files) > 1 else ""
  flags = [held_out(os.path.relpath(f, root) if root else f, fraction) for f in files]
  if all(flags) or not any(flags):
    flags = [i == len(files) - 1 for i in range(len(files))]
  return flags


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`; renamed over `path` only if the block succeeds.

  The folder is created if needed. On an exception `path` is left as it was; the temporary file
  stays, as a killed process would leave it, and the next write to `path` replaces it.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + TMP_SUFFIX
  yield tmp
  os.replace(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[IO]:
  """open() for writing whose result appears at `path` only once closed without an error."""
  with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
    yield f


def write_text(path: str, text: str) -> None:
  with atomic_open(path) as f:
    f.write(text)


def copy_file(src: str, dst: str) -> None:
  """Copies `src` to `dst` atomically (nothing to do when they are the same file)."""
  if os.path.exists(dst) and os.path.samefile(src, dst):
    return
  with atomic_path(dst) as tmp:
    shutil.copyfile(src, tmp)
