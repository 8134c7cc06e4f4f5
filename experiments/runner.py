"""A sweep's runs: one training recipe per scale, each run trained over seeds or read back when
done.

A sweep is a list of `Arm`s, each trained over seeds (one run per seed). Every run trains on the
same data (seed s gives every variant the same batches and the same init seed) for the same number
of original tokens, unless its arm says otherwise (`steps_scale`, the compute-matched baseline).
Runs live in OUT/runs/NAME-sSEED; a run with a summary.json is done and is read back, not
retrained, so the three sweeps share their common runs when given one --out, and an interrupted
sweep resumes where it stopped. What the runs give (CSV, tables, plots) is
experiments/report.py's.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time

import ml_collections

from configs import base
from phd_jax import files as fs
from phd_jax.model.flops import step_flops  # one FLOP count for sweeps and MFU
from phd_jax.train.loop import train_and_evaluate
from phd_jax.train.metrics import read_rows
from phd_jax.train.validation import LN2

# model shape, then the training recipe; both scales fit this repo's 2-core CPU machine
SCALES = {
    "quick": dict(model=dict(num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, head_dim=16,
                             mlp_dim=192),
                  train=dict(steps=150, batch_size=8, seq_len=64, learning_rate=3e-3,
                             warmup_steps=15, val_every=50, val_batches=8, log_every=10)),
    "full": dict(model=dict(num_layers=4, d_model=128, num_heads=4, num_kv_heads=2, head_dim=32,
                            mlp_dim=384),
                 train=dict(steps=300, batch_size=16, seq_len=128, learning_rate=3e-3,
                            warmup_steps=30, val_every=100, val_batches=16, log_every=20)),
}


@dataclasses.dataclass(frozen=True)
class Arm:
  """One arm of a sweep (a row of its tables): a variant and its integers, optionally trained for
  more steps; it trains one run per seed."""

  label: str
  variant: str
  k: int = 1
  window: int = 0
  chunk: int = 0
  steps_scale: float = 1.0  # > 1: trains on more original tokens (the compute-matched baseline)

  @property
  def name(self) -> str:  # the run directory: the same settings give the same name in any sweep
    name = f"{self.variant}-k{self.k}-w{self.window}-c{self.chunk}"
    return name + (f"-x{self.steps_scale:g}" if self.steps_scale != 1 else "")


@dataclasses.dataclass(frozen=True)
class Settings:
  """How a sweep runs: its scale (a key of SCALES), output folder and seeds per run."""

  scale: str
  out: str
  seeds: int
  keep_checkpoints: bool = False  # default: delete each run's checkpoints once it is done


def set_steps(scale: str, steps: int) -> None:
  """Trains every run of `scale` for `steps` steps, validating twice so each run has a curve."""
  t = SCALES[scale]["train"]
  t.update(steps=steps, val_every=max(1, steps // 2), log_every=1,
           warmup_steps=min(t["warmup_steps"], steps // 2))


def config(run: Arm, scale: str, seed: int) -> ml_collections.ConfigDict:
  if scale not in SCALES:
    raise ValueError(f"scale={scale!r} is not one of {tuple(SCALES)}")
  cfg = base.get_config()
  cfg.model.update(SCALES[scale]["model"])
  cfg.model.phd.update(variant=run.variant, num_copies=run.k, window=run.window, chunk=run.chunk)
  cfg.train.update(SCALES[scale]["train"])
  cfg.train.steps = round(cfg.train.steps * run.steps_scale)
  cfg.train.update(checkpoint_every=cfg.train.val_every, keep_checkpoints=1, sample_tokens=0)
  cfg.seed = cfg.data.seed = seed  # seed s: the same init seed and batches for every variant
  return cfg


def train_one(run: Arm, scale: str, seed: int, out: str, keep_checkpoints: bool) -> dict:
  """Trains one (run, seed), or reads it back when done; returns its summary."""
  workdir = os.path.join(out, "runs", f"{run.name}-s{seed}")
  done = os.path.join(workdir, "summary.json")
  cfg = config(run, scale, seed)
  expected = dict(steps=cfg.train.steps, flops=step_flops(cfg) * cfg.train.steps,
                  tokens=cfg.train.steps * cfg.train.batch_size * cfg.train.seq_len)
  if os.path.exists(done):
    with open(done) as f:
      summary = json.load(f)
    if any(not math.isclose(summary[k], v, rel_tol=1e-9) for k, v in expected.items()):
      raise ValueError(
          f"{workdir} holds a finished run of other settings "
          f"({ {k: summary[k] for k in expected} } != {expected}; another scale or --steps?): "
          "give this sweep its own --out")
    return summary
  t0 = time.time()
  summary = train_and_evaluate(cfg, workdir)
  summary.update(expected, seconds=time.time() - t0)
  if not keep_checkpoints:  # the curves and summary are the result; checkpoints are bulk
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
  fs.write_text(done, json.dumps(summary))  # atomic: a half-written summary never marks it done
  return summary


def curves(run: Arm, seed: int, out: str, summary: dict) -> list[dict]:
  """Rows (step, tokens, flops, split, bits_per_byte) from the run's metrics.jsonl."""
  per_step_tokens = summary["tokens"] / summary["steps"]
  per_step_flops = summary["flops"] / summary["steps"]
  rows = []
  for r in read_rows(os.path.join(out, "runs", f"{run.name}-s{seed}", "metrics.jsonl")):
    split, bpb = ("train", r["loss"] / LN2) if "loss" in r else ("val", r["val_bits_per_byte"])
    rows.append(dict(run=run.label, seed=seed, step=r["step"],
                     tokens=r["step"] * per_step_tokens, flops=r["step"] * per_step_flops,
                     split=split, bits_per_byte=bpb))
  return rows


def run_sweep(runs: list[Arm], s: Settings) -> tuple[list[dict], list[dict]]:
  """Trains every (run, seed) not yet done, with progress; returns (finals, curve rows)."""
  os.makedirs(s.out, exist_ok=True)
  todo = [(r, seed) for r in runs for seed in range(s.seeds)]
  t0 = time.time()
  finals, rows = [], []
  for i, (run, seed) in enumerate(todo, 1):
    print(f"\n=== [{i}/{len(todo)}] {run.label} ({run.name}) seed {seed} | "
          f"{time.time() - t0:.0f}s into the sweep", flush=True)
    summary = train_one(run, s.scale, seed, s.out, s.keep_checkpoints)
    finals.append(dict(run=run.label, name=run.name, variant=run.variant, K=run.k,
                       W=run.window, C=run.chunk, seed=seed, steps=summary["steps"],
                       tokens=summary["tokens"], flops=summary["flops"],
                       val_bits_per_byte=summary["val_bits_per_byte"],
                       train_seconds=round(summary["seconds"], 1)))
    rows += curves(run, seed, s.out, summary)
  print(f"\nsweep done in {time.time() - t0:.0f}s", flush=True)
  return finals, rows
