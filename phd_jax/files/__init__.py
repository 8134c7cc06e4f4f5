"""Files and paths, in one place: local paths and `gs://` / `s3://` URLs alike.

Every reader and writer of the project goes through these functions, so the rules hold everywhere
alike and for every kind of storage:
  - a path is a plain string: a local path, or a URL that fsspec's gcsfs / s3fs serve (orbax's
    epath and tensorstore reach the same buckets); local paths behave exactly as the os module;
  - a comma-separated list of globs means the same thing for training data, token files,
    prepare's input and BPE training;
  - a file split into train/val by a hash of its name lands on the same side on every machine;
  - no reader ever sees a half-written file: a local write goes to a temporary name beside its
    target and is renamed over it when complete; an object is uploaded whole once complete (an
    object store never shows a partial object), so a crash leaves the previous version;
  - nothing local is ever created for a URL (no `gs:` folder in the working directory).

Object stores are selected by the standard variables only: `STORAGE_EMULATOR_HOST` points GCS
clients at a local emulator (with anonymous credentials), `AWS_ENDPOINT_URL` points S3 clients at
another endpoint; whatever else the clients need is derived from those two and the user's own
credentials where a client is first made, never at import (files/clients.py).
"""
from __future__ import annotations

import builtins
import contextlib
import glob
import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO

from phd_jax.files.clients import configure_clients, s3_settings  # noqa: F401 (the API)
from phd_jax.files.stores import (  # noqa: F401 (the module's API)
    SCHEMES,
    bucket_and_key,
    check_access,
    filesystem,
    is_url,
    scheme,
)

TMP_SUFFIX = ".tmp"


def _fs(path: str):
  """The client for `path`, with no cached listing of it or its parents: other hosts, worker
  processes and orbax write to the same bucket, so every answer comes from the store itself."""
  fsys = filesystem(path)
  fsys.invalidate_cache(str(path))
  return fsys, str(path)


def join(*parts: str) -> str:
  return posixpath.join(*parts) if is_url(parts[0]) else os.path.join(*parts)


def absolute(path: str) -> str:
  """A local path made absolute; a URL as it is (without a trailing slash)."""
  return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def basename(path: str) -> str:
  return posixpath.basename(path.rstrip("/")) if is_url(path) else os.path.basename(path)


def dirname(path: str) -> str:
  return posixpath.dirname(path.rstrip("/")) if is_url(path) else os.path.dirname(path)


def exists(path: str) -> bool:
  if not is_url(path):
    return os.path.exists(path)
  fsys, p = _fs(path)
  return fsys.exists(p)


def isfile(path: str) -> bool:
  if not is_url(path):
    return os.path.isfile(path)
  fsys, p = _fs(path)
  return fsys.isfile(p)


def isdir(path: str) -> bool:
  """A local folder; for a URL, a prefix that holds objects (object stores have no folders)."""
  if not is_url(path):
    return os.path.isdir(path)
  fsys, p = _fs(path)
  return fsys.isdir(p)


def listdir(path: str) -> list[str]:
  """The names directly under `path`, files and folders."""
  if not is_url(path):
    return os.listdir(path)
  fsys, p = _fs(path)
  return [posixpath.basename(e.rstrip("/")) for e in fsys.ls(p, detail=False)
          if e.rstrip("/") != p.rstrip("/").split("://", 1)[-1]]


def makedirs(path: str) -> None:
  """A local folder and its parents; nothing for a URL (a prefix exists once it holds objects)."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)


def size(path: str) -> int:
  if not is_url(path):
    return os.path.getsize(path)
  fsys, p = _fs(path)
  return int(fsys.size(p))


def stamp(path: str) -> list:
  """What changes when a file's contents do: [size, mtime] locally, [size, etag/generation] of
  an object; for skipping work whose input is unchanged."""
  if not is_url(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]
  fsys, p = _fs(path)
  info = fsys.info(p)
  return [int(info["size"]), str(info.get("generation") or info.get("ETag") or info.get("etag")
                                 or info.get("mtime") or info.get("LastModified"))]


def open(path: str, mode: str = "r", **kwargs) -> IO:
  """builtins.open for local paths; a streamed object for URLs. Writing to a URL uploads the
  object when closed; appending to one is not possible (objects are immutable)."""
  if not is_url(path):
    return builtins.open(path, mode, **kwargs)
  if "a" in mode or "+" in mode:
    raise ValueError(f"{path}: objects cannot be appended to or updated in place")
  fsys, p = _fs(path)
  return fsys.open(p, mode, **kwargs)


def read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def read_range(path: str, start: int, end: int) -> bytes:
  """Bytes [start, end) of a file: a seek locally, one ranged GET from a bucket."""
  if not is_url(path):
    with builtins.open(path, "rb") as f:
      f.seek(start)
      return f.read(end - start)
  fsys, p = _fs(path)
  return fsys.cat_file(p, start=start, end=end)


def remove(path: str) -> None:
  if not is_url(path):
    os.remove(path)
    return
  fsys, p = _fs(path)
  fsys.rm_file(p)


def rmtree(path: str) -> None:
  """A folder (or the objects under a prefix) and everything in it; a single file too."""
  if not is_url(path):
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
    return
  fsys, p = _fs(path)
  fsys.rm(p, recursive=True)
  fsys.invalidate_cache()


def rename(src: str, dst: str) -> None:
  """Moves a file or folder; on an object store, a copy of each object then its deletion."""
  if not is_url(src):
    os.rename(src, dst)
    return
  fsys, p = _fs(src)
  if fsys.isdir(p):
    for obj in sorted(fsys.find(p)):
      fsys.copy(obj, posixpath.join(dst.split("://", 1)[1], posixpath.relpath(obj, _key(p))))
    fsys.rm(p, recursive=True)
  else:
    fsys.mv(p, dst)
  fsys.invalidate_cache()


def _key(url: str) -> str:  # gs://b/x -> b/x, as fsspec lists objects
  return url.split("://", 1)[1].rstrip("/")


def expand(patterns: str) -> list[str]:
  """'a/*.txt, gs://b/**/*.json' -> the sorted, de-duplicated files those globs match (`**`
  recurses; folders are left out)."""
  found: set[str] = set()
  for g in (g.strip() for g in patterns.split(",")):
    if not g:
      continue
    if not is_url(g):
      found |= {f for f in glob.glob(g, recursive=True) if os.path.isfile(f)}
      continue
    fsys, p = _fs(g)
    prefix = g[:g.index("://") + 3]
    found |= {prefix + f for f, info in fsys.glob(p, detail=True).items()
              if info.get("type") == "file"}
  return sorted(found)


def relpath(path: str, root: str) -> str:
  return posixpath.relpath(path, root) if is_url(path) else os.path.relpath(path, root)


def commonpath(paths: Sequence[str]) -> str:
  if paths and is_url(paths[0]):
    prefix = paths[0][:paths[0].index("://") + 3]
    return prefix + posixpath.commonpath([_key(p) for p in paths])
  return os.path.commonpath(paths)


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

  Relative paths keep the split the same wherever the corpus lies (a bucket or a local copy).
  When the hash puts every file on one side (few files), the last file alone is held out, so
  both sides are non-empty.
  """
  if root is None:
    root = commonpath(files) if len(files) > 1 else ""
  flags = [held_out(relpath(f, root) if root else f, fraction) for f in files]
  if all(flags) or not any(flags):
    flags = [i == len(files) - 1 for i in range(len(files))]
  return flags


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a local temporary path; it becomes `path` only if the block succeeds.

  Locally the temporary file lies beside `path` (its folder is created) and is renamed over it;
  on an exception `path` is left as it was and the temporary stays, as a killed process would
  leave it, for the next write to replace. For a URL the file is written in a local temporary
  folder and uploaded whole once the block succeeds.
  """
  if not is_url(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + TMP_SUFFIX
    yield tmp
    os.replace(tmp, path)
    return
  with tempfile.TemporaryDirectory(prefix="phd_jax_upload_") as folder:
    tmp = os.path.join(folder, basename(path))
    yield tmp
    fsys, p = _fs(path)
    fsys.put_file(tmp, p)
    fsys.invalidate_cache(dirname(p))


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[IO]:
  """open() for writing whose result appears at `path` only once closed without an error."""
  with atomic_path(path) as tmp, builtins.open(tmp, mode, **kwargs) as f:
    yield f


def write_text(path: str, text: str) -> None:
  with atomic_open(path) as f:
    f.write(text)


def write_bytes(path: str, data: bytes) -> None:
  with atomic_open(path, "wb") as f:
    f.write(data)


def copy_file(src: str, dst: str) -> None:
  """Copies `src` to `dst` atomically, across local disk and buckets (nothing to do when they
  are the same file)."""
  if src == dst or (not is_url(src) and not is_url(dst) and os.path.exists(dst)
                    and os.path.samefile(src, dst)):
    return
  if not is_url(src):
    with atomic_path(dst) as tmp:
      shutil.copyfile(src, tmp)
    return
  with local_copy(src) as local, atomic_path(dst) as tmp:
    shutil.copyfile(local, tmp)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
  """A local file with the contents of `path`, for libraries that only open local files
  (safetensors' safe_open): `path` itself when local, else a temporary download removed
  afterwards."""
  if not is_url(path):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="phd_jax_download_") as folder:
    local = os.path.join(folder, basename(path))
    fsys, p = _fs(path)
    fsys.get_file(p, local)
    yield local


def upload_tree(local: str, url: str) -> None:
  """Copies every file under the local folder `local` to the same relative path under `url`
  (a mirror of what a library wrote locally: TensorBoard events, a profile)."""
  for folder, _, names in os.walk(local):
    for name in names:
      src = os.path.join(folder, name)
      rel = os.path.relpath(src, local).replace(os.sep, "/")
      with atomic_path(join(url, rel)) as tmp:
        shutil.copyfile(src, tmp)
