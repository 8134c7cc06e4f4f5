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

  def __init__(self, checkpoint_dir: str):
    self.checkpoint_dir = checkpoint_dir
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
        raise DivergenceError(
            f"training diverged at step {step}: "
            + ", ".join(f"{k}={v}" for k, v in bad.items())
            + f". Nothing after the last good checkpoint was saved ({self.checkpoint_dir}); "
            "lower config.train.learning_rate or raise config.train.warmup_steps, then rerun "
            "to resume from it.")
