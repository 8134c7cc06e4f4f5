"""Weights & Biases, optional (config.log.wandb; `pip install -e '.[wandb]'`): one W&B run per
workdir that mirrors what MetricsLog writes.

With log.wandb.mode "off" (the default) nothing here runs and wandb is never imported;
TensorBoard (WORKDIR/tb) is written either way. On, process 0 logs the config at start, every
row of metrics.jsonl (training metrics, validation with val/<source>/..., eval/<task>/<metric>)
and at the end the sample and final validation as the run's summary.

One run across restarts: its id is kept in WORKDIR/wandb_run.json (written atomically, in a
bucket too) before wandb.init, and every later process of the workdir continues that run
(wandb.init(id=..., resume="allow")).

Rows a killed process never handed over. W&B buffers what it is given (an offline run's file is
flushed every 15 s, an online run uploads as often) and a process killed outright (kill -9, a
lost host) takes the buffer with it; metrics.jsonl has every row up to the checkpoint a rerun
resumes from. So wandb_run.json also holds the last step of a run that closed cleanly (the
buffer was emptied), and a resumed run logs the rows metrics.jsonl keeps past that step again:
after a clean stop (SIGTERM) none, after a kill those since the last clean close. A row W&B did
get before the kill is then there twice, with the same numbers.

Steps logged again. A process killed after its last checkpoint has logged steps that its rerun
logs again; metrics.jsonl drops those rows at the resume and TensorBoard purges them, but W&B
keeps history. W&B also drops a row whose `step=` is below one it already has, which would lose
the rerun's values; so rows are logged with W&B's own counter (`_step`, never `step=`) and the
training step is the x-axis of every chart (the `step` field, wandb.define_metric). A step
logged twice therefore shows two points, the later one the resumed run's: the value
metrics.jsonl keeps.

Files: W&B writes to a local folder. For a local workdir that is WORKDIR/wandb (an offline run's
is WORKDIR/wandb/offline-run-*: `wandb sync` them, oldest first, to upload one run). For a
bucket workdir it is a local temporary folder, copied to WORKDIR/wandb when the run closes (a
process killed outright leaves its offline files on that machine only).
"""
from __future__ import annotations

import json
import secrets
import shutil
import string
import sys
import tempfile

import ml_collections

from phd_jax import files as fs
from phd_jax.train.metrics import scalars

RUN_FILE = "wandb_run.json"  # {"id": the W&B run id, "closed_step": last step of a clean close}


def run_path(workdir: str) -> str:
  return fs.join(workdir, RUN_FILE)


def read_run(workdir: str) -> dict | None:
  """The workdir's W&B run (RUN_FILE); None before its first process with W&B on."""
  path = run_path(workdir)
  return json.loads(fs.read_text(path)) if fs.exists(path) else None


def start(cfg: ml_collections.ConfigDict, workdir: str) -> WandbLog | None:
  """The W&B run of the workdir, started or continued; None when log.wandb.mode is "off"."""
  return None if cfg.log.wandb.mode == "off" else WandbLog(cfg, workdir)


class WandbLog:
  """A W&B run fed the rows of MetricsLog (`write`) and the run's summary (`summarize`)."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str):
    import wandb  # only here: the package is optional (validate.py found it)

    w = cfg.log.wandb
    known = read_run(workdir) or {}
    self.id, self.closed_step = known.get("id"), known.get("closed_step", 0)
    self.workdir, self.step = workdir, self.closed_step  # the last step logged (or closed)
    if self.id is None:  # written before the run exists, so a crash in init keeps the id
      self.id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
      self._save(self.closed_step)
    self.remote, self.url = fs.is_url(workdir), fs.join(workdir, "wandb")
    self.dir = tempfile.mkdtemp(prefix="phd_jax_wandb_") if self.remote else workdir
    try:
      self.run = wandb.init(
          project=w.project, entity=w.entity or None, name=w.name or fs.basename(workdir),
          group=w.group or None, tags=[t.strip() for t in w.tags.split(",") if t.strip()] or None,
          mode=w.mode, id=self.id, resume="allow", dir=self.dir, reinit="create_new")
    except wandb.errors.Error as e:  # not logged in, no network: one line, as a bad config
      raise ValueError(f"W&B could not start run {self.id} (config.log.wandb.mode={w.mode!r}): "
                       f"{e} Or set log.wandb.mode='offline' (then `wandb sync`) or 'off'."
                       ) from None
    # A resumed run may change fields (more steps, another eval): the latest config wins.
    self.run.config.update({**cfg.to_dict(), "workdir": workdir}, allow_val_change=True)
    self.run.define_metric("step", hidden=True)
    self.run.define_metric("*", step_metric="step")  # the training step is every chart's x-axis

  def replay(self, rows: list[dict]) -> None:
    """At start: the rows metrics.jsonl keeps (up to the resumed step) that the W&B run may have
    lost, those past its last clean close."""
    for row in rows:
      if row["step"] > self.closed_step:
        self.write(row)

  def write(self, row: dict) -> None:
    """A metrics.jsonl row: its numbers, at W&B's next `_step` (see the module's docstring)."""
    self.run.log(scalars(row))
    self.step = row["step"]

  def summarize(self, summary: dict) -> None:
    """The run's end: the final validation and the sample (text) as the W&B run's summary."""
    self.run.summary.update(summary)

  def close(self) -> None:
    """Finishes the run; called while an exception unwinds the loop, marks it failed."""
    self.run.finish(exit_code=1 if sys.exc_info()[0] else 0)
    self._save(self.step)  # finish() emptied W&B's buffer: rows up to here are in the run
    if self.remote:
      fs.upload_tree(fs.join(self.dir, "wandb"), self.url)
      shutil.rmtree(self.dir, ignore_errors=True)

  def _save(self, closed_step: int) -> None:
    fs.write_text(run_path(self.workdir), json.dumps({"id": self.id, "closed_step": closed_step}))
