"""Where logged rows go: WORKDIR/metrics.jsonl and TensorBoard event files in WORKDIR/tb.

Every numeric field of a row becomes a TensorBoard scalar at the row's step. On resume, rows past
the resumed step are dropped from metrics.jsonl and TensorBoard is told to purge its events from
that step on, so both show one curve, the one the resumed run continues. A `mirror` (the W&B run
of phd_jax/train/wandb_log.py, when config.log.wandb is on) is given every row too.

A workdir in a bucket cannot be appended to: the rows are kept here and the whole file uploaded
(TensorBoard's events are written to a local folder and mirrored) every UPLOAD_SECS, before each
checkpoint (so a resumed run finds every row up to its step) and at the end.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time

from tensorboardX import SummaryWriter

from phd_jax import files as fs


def scalars(row: dict) -> dict:
  """The row's numbers: what TensorBoard and the mirror chart (a sample's text, flags: left out)."""
  return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class MetricsLog:
  """WORKDIR/metrics.jsonl: one JSON row per logged step, mirrored to TensorBoard (WORKDIR/tb)."""

  UPLOAD_SECS = 30.0

  def __init__(self, workdir: str, resume_step: int, past_rows: list[dict] | None,
               mirror=None):
    """`past_rows`: the workdir's file as read at start-up (read_log; None: there is none),
    before anything was built, so a corrupt one failed first; those up to `resume_step` stay.
    `mirror`: None, or an object with replay(rows), write(row), summarize(summary), close()."""
    self.mirror = mirror
    self.path, self.remote = log_path(workdir), fs.is_url(workdir)
    self.rows = [r for r in past_rows or [] if r["step"] <= resume_step]
    if past_rows is not None:
      self._rewrite()  # a crash here loses no rows
    if mirror:
      mirror.replay(self.rows)  # what a killed process may not have handed over
    self.tb_url = fs.join(workdir, "tb")
    self.tb_dir = tempfile.mkdtemp(prefix="phd_jax_tb_") if self.remote else self.tb_url
    self.tb = SummaryWriter(self.tb_dir, purge_step=resume_step + 1, flush_secs=30)
    self.uploaded = time.monotonic()

  def write(self, row: dict, sync: bool = False) -> None:
    """Adds a row; `sync`: a checkpoint follows before the next row, so a bucket gets it now."""
    for key, value in scalars(row).items():
      if key != "step":
        self.tb.add_scalar(key, value, row["step"])
    if self.mirror:
      self.mirror.write(row)
    if not self.remote:
      with fs.open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
      return
    self.rows.append(row)
    if sync or time.monotonic() - self.uploaded > self.UPLOAD_SECS:
      self.flush()

  def flush(self) -> None:
    """Uploads the rows and events of a bucket workdir (nothing to do locally)."""
    if self.remote:
      self._rewrite()
      self.tb.flush()
      fs.upload_tree(self.tb_dir, self.tb_url)
      self.uploaded = time.monotonic()

  def _rewrite(self) -> None:
    """Replaces the whole file (atomically) with the rows kept here: locally at a resume, and
    in a bucket at every flush (an object cannot be appended to)."""
    with fs.atomic_open(self.path) as f:
      f.writelines(json.dumps(r) + "\n" for r in self.rows)

  def summarize(self, summary: dict) -> None:
    """The run's final numbers and sample (loop.summarize): for the mirror; metrics.jsonl has
    the numbers already."""
    if self.mirror:
      self.mirror.summarize(summary)

  def close(self) -> None:
    self.tb.close()
    if self.mirror:
      self.mirror.close()
    if self.remote:
      self.flush()
      shutil.rmtree(self.tb_dir, ignore_errors=True)


def log_path(workdir: str) -> str:
  return fs.join(workdir, "metrics.jsonl")


def read_log(workdir: str) -> list[dict] | None:
  """The rows of the workdir's metrics.jsonl; None without one."""
  path = log_path(workdir)
  return read_rows(path) if fs.exists(path) else None


def read_rows(path: str) -> list[dict]:
  """The rows of a metrics.jsonl; a torn last line (a kill mid-write) is dropped."""
  with fs.open(path) as f:
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
