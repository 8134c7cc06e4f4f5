"""Why a checkpoint step does not restore, what a storage error looks like, and quiet for
orbax's and tensorstore's background echoes of a failure that was already reported.

Orbax saves and restores on background threads: when one fails and we raise it to the user as one
line, those threads still log the same traceback (absl), and the tensorstore futures they leave
behind complain when collected (asyncio, unraisable errors). Only records that repeat a storage
error, or name a checkpoint folder whose failure was already raised, are dropped.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable

import jax
import numpy as np

from phd_jax import files as fs


def chain(e: BaseException) -> list[BaseException]:
  """e and the exceptions it was raised from, outermost first (as a traceback shows them)."""
  out = []
  while e is not None and e not in out:
    out.append(e)
    e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
  return out


def reason(e: BaseException, directory: str) -> str:
  """One line: the innermost exception's type and first line, paths relative to `directory`."""
  inner = chain(e)[-1]
  msg = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
  msg = (str(msg).strip().splitlines() or [""])[0].replace(directory + os.sep, "")
  text = f"{type(inner).__name__}: {msg}" if msg else type(inner).__name__
  return text if len(text) <= 200 else text[:197] + "..."


def out_of_memory(e: BaseException) -> bool:
  return isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e)


def on_every_process(ok: bool) -> bool:
  """`ok` on every process (multi-host: all restore the same step, or all skip it)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


STORAGE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)  # 28, 27, 122, 30
_STORAGE = re.compile(r"os_error_code=\\?'?(28|27|122|30)\b|No space left on device|File too "
                      r"large|Disk quota exceeded|Read-only file system")


def storage_cause(e: BaseException) -> BaseException | None:
  """The exception in e's chain that is a storage error (disk full, quota, size limit)."""
  for x in chain(e):
    if (isinstance(x, OSError) and x.errno in STORAGE_ERRNOS) or _STORAGE.search(str(x)):
      return x
  return None


# Folders as echoes name them (_names): those whose failures were raised to this process, and
# those being restored, with their echoes held until the restore ends (attempt).
_FAILED_IN: set[str] = set()
_TRYING: dict[tuple[str, ...], list[Callable[[], None]]] = {}


def _names(folder: str) -> tuple[str, ...]:
  """How an echo names a folder: whole, or a bucket's by its key (tensorstore's spec gives the
  bucket and the key apart)."""
  key = fs.bucket_and_key(folder)[1] if fs.is_url(folder) else ""
  return (folder, key) if key else (folder,)


def mark_failed(directory: str) -> None:
  """A restore or a save in `directory` failed, and the caller was told: from now on orbax's and
  tensorstore's echoes of it (below) are dropped."""
  _FAILED_IN.update(_names(directory))
  warnings.filterwarnings("ignore", r"coroutine .* was never awaited", RuntimeWarning)


@contextlib.contextmanager
def attempt(directory: str):
  """A restore from `directory`. Orbax's threads can log a failed read before the failure reaches
  the caller: what names the folder meanwhile is held, dropped if the restore fails (an echo of
  what the caller reports) and let through as it came if it succeeds."""
  names = _names(directory)
  held = _TRYING.setdefault(names, [])
  try:
    yield
  except BaseException:
    mark_failed(directory)
    raise
  finally:
    _TRYING.pop(names, None)
  for release in held:
    release()


def _quiet(exc: BaseException | None, text: str, release: Callable[[], None]) -> bool:
  """True (and nothing to show) for an echo: a storage error, a failure already raised, or a
  folder being restored (then `release` shows it if that restore succeeds)."""
  texts = [text] + [str(x) for x in (chain(exc) if exc is not None else [])]
  named = lambda names: any(n in t for n in names for t in texts)
  if any(_STORAGE.search(t) for t in texts) or named(_FAILED_IN):
    return True
  for names, held in list(_TRYING.items()):
    if named(names):
      held.append(release)
      return True
  return False


class _Echoes(logging.Filter):
  """Drops the records that repeat a failure already raised to us: orbax's background threads
  log its traceback, asyncio its futures that nobody awaited after orbax gave up."""

  def filter(self, record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    try:
      text = record.getMessage()
    except Exception:  # a record whose arguments do not format: not ours to judge
      return True
    if exc is None and "never retrieved" not in text:
      return True
    return not _quiet(exc, text, lambda: logging.getLogger(record.name).handle(record))


_ECHOES = _Echoes()


def quiet_echoes_of_failures() -> None:
  """Once per process: the filter above on absl's and asyncio's loggers, and the unraisable
  errors of tensorstore reads and writes still completing after orbax gave up (their event loop
  closed, their coroutines collected)."""
  for name in ("absl", "asyncio"):
    if _ECHOES not in logging.getLogger(name).filters:
      logging.getLogger(name).addFilter(_ECHOES)
  if not getattr(sys.unraisablehook, "phd_jax_quiet", False):
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
      exc = unraisable.exc_value
      if not ((isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed")
              or _quiet(exc, "", lambda: previous(unraisable))):
        previous(unraisable)
    hook.phd_jax_quiet = True
    sys.unraisablehook = hook


