"""What a sweep's runs give: seed-paired tables, CSV, markdown, plots, and where they were made.

Everything here reads the rows that experiments/runner.py returns and writes files; nothing
trains.
"""
from __future__ import annotations

import csv
import math
import os
import platform
import statistics
import sys

import jax
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from configs import base
from experiments import runner
from phd_jax import files
from phd_jax.data import text


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
  with files.atomic_open(path, "w", newline="") as f:
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


def command() -> str:
  """The running command as typed from the repository root: `python -m experiments.X FLAGS`."""
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  program = f"-m {spec.name}" if spec else sys.argv[0]
  return " ".join(["python", program, *sys.argv[1:]])


def header(s: runner.Settings, what: str) -> str:
  """Provenance lines for the markdown: command, machine, corpus, scale."""
  corpus = text.load_corpus(base.get_config().data)
  scale = runner.SCALES[s.scale]
  return (f"# {what}\n\n"
          f"- command: `{command()}`\n"
          f"- machine: {machine()}\n"
          f"- corpus: {corpus.describe()}\n"
          f"- scale `{s.scale}`: model {scale['model']}; train {scale['train']}; "
          f"{s.seeds} seed(s)\n\n")


def write_outputs(s: runner.Settings, stem: str, what: str, finals: list[dict],
                  rows: list[dict], reference: str, xlabel: str = "",
                  by_flops: bool = False) -> str:
  """CSV (finals and curves), PNG (curves and final values) and a markdown table into s.out."""
  table = aggregate(finals, reference)
  write_csv(os.path.join(s.out, f"{stem}_final.csv"), finals)
  write_csv(os.path.join(s.out, f"{stem}_curves.csv"), rows)
  plot_curves(rows, os.path.join(s.out, f"{stem}_curves.png"), what, by_flops)
  plot_final(table, os.path.join(s.out, f"{stem}_final.png"), what, xlabel)
  md = header(s, what) + markdown_table(table, reference)
  files.write_text(os.path.join(s.out, f"{stem}.md"), md)
  print("\n" + md, flush=True)
  return md
