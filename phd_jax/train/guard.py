"""Divergence guard: a non-finite loss or gradient norm stops the run, naming the step.

The train step's metrics stay on the device until a check is due (a log step or a checkpoint),
so the host never waits on the accelerator just to look for NaNs. Checks are always made before
a checkpoint is written, so a non-finite state is never saved and the last good one stays.
"""
from __future__ import annotations

import math

import jax

WATCHED = ("loss", "grad_norm")


class DivergenceError(RuntimeError):
  """Training produced a non-finite loss or gradient norm."""


class DivergenceGuard:

  def __init__(self, checkpointer):
    self.checkpointer = checkpointer  # a run.checkpoint.Checkpointer: names the last good one
    self.pending: list[tuple[int, dict]] = []

  def check(self, step: int, metrics: dict, now: bool = False) -> None:
    """Records this step's metrics; with `now`, checks every step recorded since the last check."""
    self.pending.append((step, {k: metrics[k] for k in WATCHED}))
    if now:
      self.flush()

  def flush(self) -> None:
    pending, self.pending = jax.device_get(self.pending), []
    for step, values in pending:
      bad = {k: float(v) for k, v in values.items() if not math.isfinite(float(v))}
      if bad:
        self.checkpointer.wait()  # the last good checkpoint is complete before we stop
        last = self.checkpointer.latest_step()
        kept = (f"the last good checkpoint (step {last}) is kept in "
                f"{self.checkpointer.directory}" if last else "no checkpoint was written")
        raise DivergenceError(
            f"training diverged at step {step}: "
            + ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            + f"; stopped without saving, {kept}. Lower config.train.learning_rate (or raise "
            "config.train.warmup_steps / lower config.train.grad_clip) and rerun: it resumes "
            "from the last good checkpoint.")
