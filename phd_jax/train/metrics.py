"""Where logged rows go: WORKDIR/metrics.jsonl and TensorBoard event files in WORKDIR/tb.

Every numeric field of a row becomes a TensorBoard scalar at the row's step. On resume, rows past
the resumed step are dropped from metrics.jsonl and TensorBoard is told to purge its events from
that step on, so both show one curve, the one the resumed run continues.
"""
from __future__ import annotations

import json
import os

from tensorboardX import SummaryWriter

from phd_jax import files as fs


class MetricsLog:
  """WORKDIR/metrics.jsonl: one JSON row per logged step, mirrored to TensorBoard (WORKDIR/tb)."""

  def __init__(self, workdir: str, resume_step: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(self.path):
      rows = [r for r in read_rows(self.path) if r["step"] <= resume_step]
      with fs.atomic_open(self.path) as f:  # a crash here loses no rows
        f.writelines(json.dumps(r) + "\n" for r in rows)
    self.tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=resume_step + 1,
                            flush_secs=30)

  def write(self, row: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for key, value in row.items():
      if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
        self.tb.add_scalar(key, value, row["step"])

  def close(self) -> None:
    self.tb.close()


def read_rows(path: str) -> list[dict]:
  """The rows of a metrics.jsonl; a torn last line (a kill mid-write) is dropped."""
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  rows = []
  for i, line in enumerate(lines, 1):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines):
        break
      raise ValueError(f"{path}:{i} is not a JSON row of metrics ({line[:80]!r}); move the "
                       "file away or use another --workdir") from None
  return rows
