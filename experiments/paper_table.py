"""The paper's downstream table from finished runs: one row per run, with its shape, size,
training tokens, final validation loss, and acc and bits/byte on the paper's seven tasks.

  python -m experiments.paper_table --runs=RUN[,RUN...] [--out=FILE.md] [--limit=N]

Each run's newest checkpoint that loads is scored with the library's lm-eval adapter (the same
path as phd-evaluate --tasks=paper). The results are kept in RUN/paper_eval.json with the step
and --limit they were made at, so a rerun at the same checkpoint and limit only redraws the
table; a newer checkpoint or another limit is evaluated again. --out writes the markdown (with
where and how it was made) and FILE.csv beside it. The benchmarks are read offline from the
cache `make eval-data` fills.

Below the runs a `chance` row gives the acc of uniform guessing, the floor small models sit on:
a constant for tasks whose questions all have the same number of choices, and for ARC (a few
3- and 5-choice questions) the exact mean of 1/choices over the documents scored.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import jax
from absl import flags
from flax import nnx

from experiments import cli, report
from phd_jax import files as fs
from phd_jax.checkpoints.load import load_run
from phd_jax.cli import common
from phd_jax.eval import eval_data
from phd_jax.eval import results as eval_results
from phd_jax.eval import tasks as eval_tasks
from phd_jax.train.metrics import read_rows

_RUNS = flags.DEFINE_multi_string("runs", None, "Run workdirs, comma separated (the flag may "
                                  "also be repeated); one table row each, in this order.")
_OUT = flags.DEFINE_string("out", "", "Write the markdown table here and a CSV beside it "
                           "(same stem, .csv); default: print only.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Documents per task, the first N of each (0: all).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Requests scored per forward pass.")

TASKS = eval_tasks.PAPER_TASKS
CACHE = "paper_eval.json"
LABELS = {"arc_easy": "ARC-e", "arc_challenge": "ARC-c", "hellaswag": "HellaSwag",
          "piqa": "PIQA", "winogrande": "WinoGrande", "mmlu": "MMLU", "commonsense_qa": "CSQA"}
# Uniform guessing where every question has the same number of choices (hellaswag: 4 endings,
# piqa and winogrande: 2 options, mmlu: 4, commonsense_qa: 5); ARC's is computed (arc_chance).
CHANCE = {"hellaswag": 0.25, "piqa": 0.5, "winogrande": 0.5, "mmlu": 0.25, "commonsense_qa": 0.2}


def run_dirs(values: list[str] | None) -> list[str]:
  """--runs as a list of workdirs: commas split, blanks and repeats dropped, order kept."""
  dirs = [d.strip().rstrip("/") for v in values or [] for d in v.split(",")]
  dirs = list(dict.fromkeys(d for d in dirs if d))
  cli.check(bool(dirs), "--runs is empty: give run workdirs, comma separated")
  return dirs


def check_run(workdir: str) -> None:
  """Fails before any evaluation when a run has nothing to load, so a typo in the last of
  several runs does not wait for the others' evaluations."""
  fs.check_access(workdir, "--runs")
  if not fs.isdir(fs.join(workdir, "checkpoints")):
    raise ValueError(f"--runs: no checkpoints in {workdir} (expected "
                     f"{fs.join(workdir, 'checkpoints')}); train first")


def final_validation(workdir: str, step: int) -> dict:
  """The last validation row of metrics.jsonl at or before the checkpoint's step (a row past it
  scored parameters that were never saved); None for what is missing."""
  path = fs.join(workdir, "metrics.jsonl")
  rows = read_rows(path) if fs.exists(path) else []
  vals = [r for r in rows if "val_bits_per_byte" in r and r.get("step", 0) <= step]
  last = vals[-1] if vals else {}
  return {"val_step": last.get("step"), "val_loss": last.get("val_loss"),
          "val_bits_per_byte": last.get("val_bits_per_byte")}


def cached(path: str, step: int, limit: int) -> dict | None:
  """The results in `path` if they were made at this step and limit and hold every task."""
  if not fs.exists(path):
    return None
  try:
    results = json.loads(fs.read_text(path))
  except (json.JSONDecodeError, UnicodeDecodeError):
    return None  # not ours, or damaged: evaluate again and replace it
  meta = results.get("paper_table") or {}
  if meta.get("step") != step or meta.get("limit") != limit:
    return None
  if not all(t in results.get("results", {}) for t in TASKS):
    return None
  return results


class Evaluator:
  """Scores models on the paper suite; the task index is built once, on the first evaluation,
  so a rerun that reuses every run's results never loads lm-eval's tasks."""

  def __init__(self, limit: int, batch_size: int):
    self.limit, self.batch_size, self.manager = limit, batch_size, None

  def __call__(self, workdir: str, model, cfg, step: int) -> dict:
    from phd_jax.data.tokenizers import for_run
    from phd_jax.eval.harness import PHDLM
    if self.manager is None:
      self.manager = eval_tasks.resolve_tasks(list(TASKS))
    # The model load_run gave (what PHDLM.from_run would load again), its tokenizer and seq_len.
    lm = PHDLM(model, for_run(workdir, cfg), cfg.train.seq_len, self.batch_size)
    lm.step = step
    try:
      return eval_tasks.run_tasks(lm, list(TASKS), self.manager, limit=self.limit or None)
    except OSError as e:  # an unreadable data file
      raise ValueError(f"{type(e).__name__}: {e} (run `make eval-data` to fetch the paper's "
                       "benchmarks again)") from None


def measure_run(workdir: str, evaluate: Evaluator, say) -> tuple[dict, dict]:
  """(the table row, lm-eval's results) of one run, evaluating it unless its cache matches."""
  model, cfg, step = load_run(workdir, probed=True)  # check_run probed it
  phd, t = cfg.model.phd, cfg.train
  path = fs.join(workdir, CACHE)
  results = cached(path, step, evaluate.limit)
  reused = results is not None
  if reused:
    seconds = results["paper_table"].get("seconds", float("nan"))
    say(f"{workdir}: step {step}: reused {path} (evaluated in {seconds:.1f} s)")
  else:
    say(f"{workdir}: step {step}: evaluating the paper suite ...")
    start = time.perf_counter()
    results = evaluate(workdir, model, cfg, step)
    seconds = time.perf_counter() - start
    results["paper_table"] = {"step": step, "limit": evaluate.limit, "seconds": seconds}
    eval_results.write_json(path, results)
    say(f"{workdir}: step {step}: evaluated in {seconds:.1f} s, results in {path}")
  scores = results["results"]
  acc = {t_: float(scores[t_]["acc,none"]) for t_ in TASKS}
  bpb = {t_: float(scores[t_]["bpb,none"]) for t_ in TASKS}
  row = {"run": fs.basename(workdir), "workdir": workdir, "variant": phd.variant,
         "K": phd.num_copies, "W": phd.window if model.spec.has_window else "",
         "C": phd.chunk if model.spec.chunked else "",
         "params": sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))),
         "tokens": step * t.batch_size * t.seq_len, "step": step,
         **final_validation(workdir, step),
         **{f"{t_}_acc": acc[t_] for t_ in TASKS}, "avg_acc": statistics.mean(acc.values()),
         **{f"{t_}_bpb": bpb[t_] for t_ in TASKS}, "avg_bpb": statistics.mean(bpb.values()),
         "limit": evaluate.limit, "eval_seconds": round(seconds, 2),
         "reused": reused}
  return row, results


def arc_chance(task: str, split: str, n: int) -> float:
  """Mean of 1/choices over the first `n` documents of `split`: what lm-eval scored with
  --limit (it takes each split's first documents, in order)."""
  import datasets
  (folder,) = eval_data.dataset_folders(task).values()
  docs = datasets.load_from_disk(os.path.join(folder, split))
  return statistics.mean(1 / len(c["text"]) for c in docs.select(range(n))["choices"])


def chance(results: dict) -> dict[str, float]:
  """{task: acc of uniform guessing} over the documents `results` scored."""
  out = dict(CHANCE)
  for task in ("arc_easy", "arc_challenge"):
    out[task] = arc_chance(task, results["splits"][task],
                           int(results["n-samples"][task]["effective"]))
  return {t: out[t] for t in TASKS}


def count(n: int) -> str:
  """1230000 -> '1.23M', 1.2e9 -> '1.20B'; a count under 10k as it is."""
  if n >= 1e9:
    return f"{n / 1e9:.2f}B"
  return f"{n / 1e6:.2f}M" if n >= 1e4 else str(n)


def _num(x: float | None) -> str:
  return "-" if x is None else f"{x:.4f}"


def markdown_table(rows: list[dict], floor: dict[str, float]) -> str:
  """The runs, then the chance row (acc only: guessing has no bits/byte)."""
  cols = ["run", "variant", "K", "W", "C", "params", "train tokens", "val loss (nats/token)",
          "val bits/byte", *(f"{LABELS[t]} acc" for t in TASKS), "avg acc",
          *(f"{LABELS[t]} bpb" for t in TASKS), "avg bpb"]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    cells = [r["run"], r["variant"], r["K"], r["W"] or "-", r["C"] or "-", count(r["params"]),
             count(r["tokens"]), _num(r["val_loss"]), _num(r["val_bits_per_byte"]),
             *(_num(r[f"{t}_acc"]) for t in TASKS), _num(r["avg_acc"]),
             *(_num(r[f"{t}_bpb"]) for t in TASKS), _num(r["avg_bpb"])]
    lines.append("| " + " | ".join(map(str, cells)) + " |")
  guess = ["chance", *[""] * 8, *(_num(floor[t]) for t in TASKS),
           _num(statistics.mean(floor.values())), *["-"] * (len(TASKS) + 1)]
  lines.append("| " + " | ".join(guess) + " |")
  return "\n".join(lines) + "\n"


def header(rows: list[dict], splits: dict[str, str], limit: int) -> str:
  """Where, how and on what the table was made."""
  docs = f"first {limit} documents per task" if limit else "full evaluation sets (every document)"
  times = "; ".join(f"{r['run']} (step {r['step']}) {r['eval_seconds']:.1f} s"
                    + (" (reused from paper_eval.json)" if r["reused"] else "") for r in rows)
  return ("# Downstream evaluation on the paper's seven tasks\n\n"
          f"- command: `{report.command()}`\n"
          f"- machine: {report.machine()}\n"
          f"- documents: {docs}; the tasks' own prompts and shots (lm-eval)\n"
          f"- splits scored: {', '.join(f'{t}={s}' for t, s in splits.items())}\n"
          f"- evaluation wall time per run: {times}\n"
          "- acc: lm-eval's acc; bpb: bits per byte of the gold continuation "
          "(phd_jax/eval/bpb.py); MMLU: its group's size-weighted mean over 57 subjects; "
          "avg: the unweighted mean of the seven; train tokens: checkpoint step x batch x "
          "seq_len (original tokens); val: metrics.jsonl's last validation at or before the "
          "checkpoint\n\n")


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  limit, batch_size = cli.at_least(_LIMIT, 0), cli.at_least(_BATCH, 1)
  workdirs = run_dirs(_RUNS.value)
  if not eval_data.present():
    raise ValueError(f"the paper's benchmarks are not in {eval_data.root()}: run `make "
                     "eval-data` once to fetch them")
  if _OUT.value:
    fs.check_access(_OUT.value, "--out", write=True)
  for workdir in workdirs:
    check_run(workdir)
  evaluate = Evaluator(limit, batch_size)
  rows, first = [], None
  for i, workdir in enumerate(workdirs, 1):
    row, results = measure_run(workdir, evaluate,
                               lambda m, i=i: print(f"[{i}/{len(workdirs)}] {m}", flush=True))
    rows.append(row)
    first = first or results
  table = markdown_table(rows, chance(first))
  print("\n" + table, flush=True)
  if _OUT.value:
    fs.write_text(_OUT.value, header(rows, first["splits"], limit) + table)
    csv_path = os.path.splitext(_OUT.value)[0] + ".csv"
    report.write_csv(csv_path, rows)
    print(f"written: {_OUT.value}, {csv_path}")


if __name__ == "__main__":
  common.launch(main, required=["runs"])
