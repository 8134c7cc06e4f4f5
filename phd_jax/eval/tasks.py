"""lm-eval tasks by name: the paper's suite, task lookup (built-in or local YAMLs), running them,
and their results as JSON files and as metrics.jsonl rows.

Task names are resolved before any model loads, so a typo fails in a second, not after the
checkpoint is read.
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from phd_jax import files as fs

if TYPE_CHECKING:  # the harness imports lm-eval's model stack: only runs that evaluate pay for it
  from phd_jax.eval.harness import PHDLM

# The paper's downstream suite, by lm-eval task name (mmlu is a group of 57 subjects).
PAPER_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "mmlu",
               "commonsense_qa")
def expand_tasks(tasks: str | Sequence[str]) -> list[str]:
  """'a,b' or ['a', 'b'] -> task names; 'paper' stands for the paper's seven benchmarks."""
  names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks)]
  out = []
  for name in filter(None, names):
    out.extend(PAPER_TASKS if name == "paper" else [name])
  return list(dict.fromkeys(out))  # order kept, duplicates dropped


@functools.lru_cache(maxsize=4)
def _manager(include_path: str | None, include_defaults: bool):
  from lm_eval.tasks import TaskManager
  return TaskManager(include_path=include_path, include_defaults=include_defaults)


def task_manager(tasks: Sequence[str], include_path: str | None = None):
  """lm-eval's TaskManager (one per process and path); when every task is local, the built-in
  index (thousands of YAML files, ~10 s) is skipped."""
  if include_path:
    if fs.is_url(include_path):
      raise ValueError(f"--include_path={include_path}: lm-eval reads task YAMLs from a local "
                       "folder only; copy them to one (gcloud storage cp -r / aws s3 cp "
                       "--recursive) and pass that folder")
    if not os.path.isdir(include_path):
      raise ValueError(f"--include_path={include_path!r} is not a directory")
    include_path = os.path.abspath(include_path)
    local = _manager(include_path, False)
    if all(t in local.all_tasks for t in tasks):
      return local
  return _manager(include_path or None, True)


def resolve_tasks(tasks: Sequence[str], include_path: str | None = None):
  """The TaskManager that knows every task in `tasks`; unknown names fail here, before any model
  is loaded or any dataset fetched."""
  manager = task_manager(tasks, include_path)
  unknown = [t for t in tasks if t not in manager.all_tasks]
  if unknown:
    raise ValueError(f"unknown lm-eval task(s) {unknown}: not built in and not in "
                     f"include_path={include_path!r}")
  return manager


def run_tasks(lm: PHDLM, tasks: Sequence[str], manager, *, limit: int | None = None,
              num_fewshot: int | None = None) -> dict:
  """lm-eval's simple_evaluate over `lm`; returns its output ({"results": {task: {...}}, ...})."""
  import lm_eval
  return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                 num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=0)


def write_json(path: str, results: dict) -> None:
  """Atomic write of lm-eval's output (its own serialiser for the non-JSON values); a bucket URL
  gets the whole object once the JSON is complete."""
  from lm_eval.utils import handle_non_serializable
  with fs.atomic_open(path) as f:
    json.dump(results, f, indent=2, default=handle_non_serializable, ensure_ascii=False)


def flatten_results(results: dict) -> dict[str, float]:
  """lm-eval's {"results": {task: {"acc,none": x, "acc_stderr,none": ..}}} -> {"eval/task/acc": x}.

  Standard errors and non-numeric fields are left out; a filter other than "none" is kept in the
  name (eval/task/exact_match/strict-match).
  """
  row = {}
  for task, metrics in results["results"].items():
    for key, value in metrics.items():
      metric, _, filt = key.partition(",")
      if not filt or "_stderr" in metric or not isinstance(value, (int, float)):
        continue
      row[f"eval/{task}/{metric}" + ("" if filt == "none" else f"/{filt}")] = float(value)
  return row
