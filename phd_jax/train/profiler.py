"""`train.profile_steps=(start, stop)`: a jax.profiler trace of steps start..stop-1.

The trace lands in WORKDIR/profile (`plugins/profile/<run>/*.xplane.pb`), readable with
TensorBoard's profile plugin / XProf (`tensorboard --logdir WORKDIR/profile`) or Perfetto. For a
workdir in a bucket the trace is written locally and uploaded when it ends.
"""
from __future__ import annotations

import shutil
import tempfile

import jax

from phd_jax import files as fs


class Profiler:

  def __init__(self, workdir: str, steps: tuple[int, int]):
    self.directory = fs.join(workdir, "profile")
    self.start, self.stop = steps
    self.enabled = self.start < self.stop
    self.active = False

  def step(self, step: int, state=None) -> None:
    """Call before running `step`: starts the trace at `start`, ends it before `stop`."""
    if not self.enabled:
      return
    if not self.active and self.start <= step < self.stop:
      self.local = tempfile.mkdtemp(prefix="phd_jax_profile_") if fs.is_url(self.directory) \
          else self.directory
      jax.profiler.start_trace(self.local)
      self.active = True
    elif self.active and step >= self.stop:
      self.close(state)

  def close(self, state=None) -> None:
    """Ends a running trace once the traced steps' work has finished on the device."""
    if self.active:
      try:
        jax.block_until_ready(state)
      except RuntimeError:  # the state was donated to a step that failed: nothing to wait for
        pass
      jax.profiler.stop_trace()
      self.active = False
      if self.local != self.directory:
        fs.upload_tree(self.local, self.directory)
        shutil.rmtree(self.local, ignore_errors=True)
