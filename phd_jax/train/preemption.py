"""Preemption: SIGTERM / SIGINT end the run at a step every host agrees on, after a checkpoint.

How hosts agree on that step:
- jax.distributed runs (TPU pods, GPU clusters, multi-process CPU): JAX's preemption sync manager
  (the coordination service) catches SIGTERM on any host, and
  `multihost_utils.reached_preemption_sync_point(step)` turns True on every host at the same
  step. SIGINT (Ctrl-C) is forwarded to it as SIGTERM, so it agrees the same way.
- one process: a Python signal handler sets a flag that the loop reads after each step.
- several processes without the sync manager (`jax_enable_preemption_service=False`): the flag,
  OR-ed over processes with `multihost_utils.process_allgather` after every step (one tiny
  collective per step).
A second signal while the first is being handled gets the default behaviour (exits at once).
"""
from __future__ import annotations

import os
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _sync_manager():
  from jax._src import distributed  # where jax.distributed keeps its runtime state
  return distributed.global_state.preemption_sync_manager


class Preemption:
  """Context manager: installs the handlers on entry and restores the previous ones on exit."""

  def __init__(self):
    self.signal: int | None = None
    self.synced = jax.process_count() > 1 and _sync_manager() is not None
    self._previous: dict[int, object] = {}

  def __enter__(self) -> Preemption:
    # With the sync manager, SIGTERM stays with it (its handler is native); SIGINT forwards.
    for sig in (signal.SIGINT,) if self.synced else SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, sig: int, frame) -> None:
    del frame
    self.signal = sig
    signal.signal(sig, self._previous.get(sig, signal.SIG_DFL))  # a second one is not caught
    if self.synced:
      os.kill(os.getpid(), signal.SIGTERM)

  def requested(self, step: int) -> bool:
    """True (on every host at the same step) once a signal asks the run to stop after `step`."""
    if self.synced:
      return multihost_utils.reached_preemption_sync_point(step)
    if jax.process_count() > 1:
      flags = multihost_utils.process_allgather(np.int32(self.signal is not None))
      return bool(np.any(flags))
    return self.signal is not None

  def describe(self) -> str:
    return signal.Signals(self.signal).name if self.signal else "a preemption notice"
