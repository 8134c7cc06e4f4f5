"""What the sweep scripts share: one training recipe per scale, runs over seeds, tables and plots.

A sweep is a list of `Run`s. Every run trains on the same data (seed s gives every variant the
same batches and the same init seed) for the same number of original tokens, unless the run says
otherwise (`steps_scale`, the compute-matched baseline). Runs live in OUT/runs/NAME-sSEED; a run
with a summary.json is done and is read back, not retrained, so the three sweeps share their
common runs when given one --out, and an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time

import jax
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402

from configs import base  # noqa: E402
from phd_jax import data  # noqa: E402
from phd_jax.flops import step_flops  # noqa: E402  (one FLOP count for sweeps and MFU)
from phd_jax.train import train_and_evaluate  # noqa: E402

LN2 = math.log(2.0)

# model shape, then the training recipe; both scales fit this repo's 2-core CPU machine
SCALES = {
    "quick": dict(model=dict(num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, head_dim=16,
                             mlp_dim=192),
                  train=dict(steps=150, batch_size=8, seq_len=64, learning_rate=3e-3,
                             warmup_steps=15, eval_every=50, eval_batches=8, log_every=10)),
    "full": dict(model=dict(num_layers=4, d_model=128, num_heads=4, num_kv_heads=2, head_dim=32,
                            mlp_dim=384),
                 train=dict(steps=300, batch_size=16, seq_len=128, learning_rate=3e-3,
                            warmup_steps=30, eval_every=100, eval_batches=16, log_every=20)),
}


@dataclasses.dataclass(frozen=True)
class Run:
  """One row of a sweep: a variant and its integers, optionally trained for more steps."""

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


def config(run: Run, scale: str, seed: int) -> ml_collections.ConfigDict:
  if scale not in SCALES:
    raise ValueError(f"scale={scale!r} is not one of {tuple(SCALES)}")
  cfg = base.get_config()
  cfg.model.update(SCALES[scale]["model"])
  cfg.model.phd.update(variant=run.variant, num_copies=run.k, window=run.window, chunk=run.chunk)
  cfg.train.update(SCALES[scale]["train"])
  cfg.train.steps = round(cfg.train.steps * run.steps_scale)
  cfg.train.update(checkpoint_every=cfg.train.eval_every, keep_checkpoints=1, sample_tokens=0)
  cfg.seed = cfg.data.seed = seed  # seed s: the same init seed and batches for every variant
  return cfg


def train_one(run: Run, scale: str, seed: int, out: str, keep_checkpoints: bool) -> dict:
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
  tmp = done + ".tmp"
  with open(tmp, "w") as f:
    json.dump(summary, f)
  os.replace(tmp, done)  # atomic: a half-written summary never marks a run done
  return summary


def curves(run: Run, seed: int, out: str, summary: dict) -> list[dict]:
  """Rows (step, tokens, flops, split, bits_per_byte) from the run's metrics.jsonl."""
  per_step_tokens = summary["tokens"] / summary["steps"]
  per_step_flops = summary["flops"] / summary["steps"]
  rows = []
  with open(os.path.join(out, "runs", f"{run.name}-s{seed}", "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      split, bpb = (("train", r["loss"] / LN2) if "loss" in r
                    else ("val", r["val_bits_per_byte"]))
      rows.append(dict(run=run.label, seed=seed, step=r["step"],
                       tokens=r["step"] * per_step_tokens, flops=r["step"] * per_step_flops,
                       split=split, bits_per_byte=bpb))
  return rows


def parse_args(description: str, default_out: str) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--quick", action="store_true",
                 help="small model and few steps: the whole sweep in minutes on 2 CPU cores")
  p.add_argument("--out", default=default_out, help="output folder (runs/, CSV, PNG, table)")
  p.add_argument("--seeds", type=int, default=2, help="seeds per run (>= 2 gives a spread)")
  p.add_argument("--steps", type=int, default=None, help="override the scale's training steps")
  p.add_argument("--keep_checkpoints", action="store_true",
                 help="keep each run's last checkpoint (default: delete once the run is done)")
  args = p.parse_args()
  args.scale = "quick" if args.quick else "full"
  if args.seeds < 1:
    p.error(f"--seeds={args.seeds} must be >= 1")
  if args.steps is not None:
    if args.steps < 2:
      p.error(f"--steps={args.steps} must be >= 2")
    t = SCALES[args.scale]["train"]  # evaluate twice, so every run has a curve
    t.update(steps=args.steps, eval_every=max(1, args.steps // 2), log_every=1,
             warmup_steps=min(t["warmup_steps"], args.steps // 2))
  return args


def run_sweep(runs: list[Run], args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
  """Trains every (run, seed) not yet done, with progress; returns (finals, curve rows)."""
  os.makedirs(args.out, exist_ok=True)
  todo = [(r, s) for r in runs for s in range(args.seeds)]
  t0 = time.time()
  finals, rows = [], []
  for i, (run, seed) in enumerate(todo, 1):
    print(f"\n=== [{i}/{len(todo)}] {run.label} ({run.name}) seed {seed} | "
          f"{time.time() - t0:.0f}s into the sweep", flush=True)
    summary = train_one(run, args.scale, seed, args.out, args.keep_checkpoints)
    finals.append(dict(run=run.label, name=run.name, variant=run.variant, K=run.k,
                       W=run.window, C=run.chunk, seed=seed, steps=summary["steps"],
                       tokens=summary["tokens"], flops=summary["flops"],
                       val_bits_per_byte=summary["val_bits_per_byte"],
                       train_seconds=round(summary["seconds"], 1)))
    rows += curves(run, seed, args.out, summary)
  print(f"\nsweep done in {time.time() - t0:.0f}s", flush=True)
  return finals, rows


def aggregate(finals: list[dict], reference: str) -> list[dict]:
  """One row per run: mean and sample std over seeds, and the change against `reference`.

  The change is paired by seed (seed s gives both runs the same init seed and batches), which
  removes the seed-to-seed swing that both share; its std is over those per-seed differences.
  """
  by_run: dict[str, dict[int, dict]] = {}
  for f in finals:
    by_run.setdefault(f["run"], {})[f["seed"]] = f
  ref = by_run[reference]
  ref_flops = next(iter(ref.values()))["flops"]
  table = []
  for label, fs in by_run.items():
    vals = [f["val_bits_per_byte"] for f in fs.values()]
    diffs = [f["val_bits_per_byte"] - ref[s]["val_bits_per_byte"] for s, f in fs.items()
             if s in ref]
    first = next(iter(fs.values()))
    table.append(dict(run=label, K=first["K"], W=first["W"], C=first["C"], steps=first["steps"],
                      tokens=first["tokens"], flops_x=first["flops"] / ref_flops,
                      seeds=len(vals), mean=statistics.mean(vals), std=_std(vals),
                      values=vals, seed_ids=list(fs), delta=statistics.mean(diffs),
                      delta_std=_std(diffs)))
  return table


def _std(xs: list[float]) -> float:
  return statistics.stdev(xs) if len(xs) > 1 else float("nan")


def _pm(mean: float, std: float, fmt: str = ".4f") -> str:
  return f"{mean:{fmt}}" + ("" if math.isnan(std) else f" ± {std:.4f}")


def write_csv(path: str, rows: list[dict]) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def markdown_table(table: list[dict], reference: str) -> str:
  lines = ["| run | K | W | C | original tokens | train FLOPs (x ref) | val bits/byte "
           f"(mean ± std over seeds) | vs {reference} (paired by seed) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in table:
    c = r["C"] if r["C"] else "-"
    w = r["W"] if r["W"] else "-"
    lines.append(f"| {r['run']} | {r['K']} | {w} | {c} | {r['tokens'] / 1e6:.3g}M | "
                 f"{r['flops_x']:.2f} | {_pm(r['mean'], r['std'])} (n={r['seeds']}) | "
                 f"{_pm(r['delta'], r['delta_std'], '+.4f')} |")
  return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict], path: str, title: str, by_flops: bool = False) -> None:
  """Train and validation bits/byte against original tokens (and FLOPs), seed mean per run."""
  panels = [("train", "tokens"), ("val", "tokens")] + ([("val", "flops")] if by_flops else [])
  fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2))
  labels = list(dict.fromkeys(r["run"] for r in rows))
  for ax, (split, x) in zip(axes, panels):
    for label in labels:
      pts: dict[int, list[dict]] = {}
      for r in rows:
        if r["run"] == label and r["split"] == split:
          pts.setdefault(r["step"], []).append(r)
      steps = sorted(pts)
      xs = [pts[s][0][x] for s in steps]
      ys = [statistics.mean(p["bits_per_byte"] for p in pts[s]) for s in steps]
      ax.plot(xs, ys, marker="o" if split == "val" else None, ms=3, label=label)
    ax.set_xlabel("original training tokens" if x == "tokens" else "training FLOPs")
    ax.set_ylabel(f"{split} bits/byte")
    ax.set_xscale("log" if x == "flops" else "linear")
    ax.grid(alpha=0.3)
    if split == "train":  # the first steps are far above the rest
      last = max(r["step"] for r in rows)
      tail = [r["bits_per_byte"] for r in rows if r["split"] == "train" and r["step"] > last / 5]
      if tail:
        ax.set_ylim(min(tail) - 0.05, max(tail) + 0.1)
  axes[0].legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def plot_final(table: list[dict], path: str, title: str, xlabel: str = "") -> None:
  """Final validation bits/byte per run: each seed (a colour per seed), mean and std (black).

  Seed s gives every run the same init seed and batches, so compare colours across runs.
  """
  fig, ax = plt.subplots(figsize=(1.1 * len(table) + 2.5, 3.8))
  for x, r in enumerate(table):
    for seed, v in zip(r["seed_ids"], r["values"]):
      ax.scatter([x + 0.08], [v], color=f"C{seed}", s=18, alpha=0.8,
                 label=f"seed {seed}" if x == 0 else None)
    ax.errorbar([x], [r["mean"]], yerr=[0 if math.isnan(r["std"]) else r["std"]], fmt="D",
                color="black", ms=5, capsize=4, label="mean ± std" if x == 0 else None)
  ax.set_xticks(range(len(table)), [r["run"] for r in table], rotation=20, ha="right",
                fontsize=8)
  ax.set_xlim(-0.5, len(table) - 0.5)
  ax.set_ylabel("final val bits/byte (lower is better)")
  ax.set_xlabel(xlabel)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def machine() -> str:
  """The hardware and software a measurement ran on, for the tables' provenance lines."""
  return (f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} on "
          f"{jax.devices()[0].device_kind}, Python {platform.python_version()}")


def header(args: argparse.Namespace, what: str) -> str:
  """Provenance lines for the markdown: command, machine, corpus, scale."""
  corpus = data.load_corpus(base.get_config().data)
  s = SCALES[args.scale]
  return (f"# {what}\n\n"
          f"- command: `python {' '.join(sys.argv)}`\n"
          f"- machine: {machine()}\n"
          f"- corpus: {corpus.describe()}\n"
          f"- scale `{args.scale}`: model {s['model']}; train {s['train']}; "
          f"{args.seeds} seed(s)\n\n")


def write_outputs(args, stem: str, what: str, finals: list[dict],
                  rows: list[dict], reference: str, xlabel: str = "",
                  by_flops: bool = False) -> str:
  """CSV (finals and curves), PNG (curves and final values) and a markdown table into --out."""
  table = aggregate(finals, reference)
  write_csv(os.path.join(args.out, f"{stem}_final.csv"), finals)
  write_csv(os.path.join(args.out, f"{stem}_curves.csv"), rows)
  plot_curves(rows, os.path.join(args.out, f"{stem}_curves.png"), what, by_flops)
  plot_final(table, os.path.join(args.out, f"{stem}_final.png"), what, xlabel)
  md = header(args, what) + markdown_table(table, reference)
  with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
    f.write(md)
  print("\n" + md, flush=True)
  return md


def main(description: str, runs, stem: str, title: str, xlabel: str = "",
         by_flops: bool = False) -> None:
  """A sweep script's whole CLI: parse, train what is missing, write CSV, PNG and table.

  `runs` is a list of Runs, or a function of the scale that returns one.
  """
  args = parse_args(description, "runs/experiments")
  rs = runs(args.scale) if callable(runs) else runs
  finals, rows = run_sweep(rs, args)
  write_outputs(args, stem, title, finals, rows, reference="vanilla", xlabel=xlabel,
                by_flops=by_flops)
