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
from phd_jax.eval import eval_data, paper_suite
from phd_jax.eval.bpb import add_bpb

if TYPE_CHECKING:  # the harness imports lm-eval's model stack: only runs that evaluate pay for it
  from phd_jax.eval.harness import PHDLM

# The paper's downstream suite, by lm-eval task name (mmlu is a group of 57 subjects).
PAPER_TASKS = tuple(eval_data.DATASETS)
OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def expand_tasks(tasks: str | Sequence[str]) -> list[str]:
  """'a,b' or ['a', 'b'] -> task names; 'paper' stands for the paper's seven benchmarks."""
  names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks)]
  out = []
  for name in filter(None, names):
    out.extend(PAPER_TASKS if name == "paper" else [name])
  return list(dict.fromkeys(out))  # order kept, duplicates dropped


def offline() -> bool:
  """Whether the Hugging Face offline variables are set (the hub must not be asked)."""
  return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARS)


@functools.lru_cache(maxsize=4)
def _manager(paths: tuple[str, ...], include_defaults: bool):
  from lm_eval.tasks import TaskManager
  return TaskManager(include_path=list(paths) or None, include_defaults=include_defaults)


def _include_folder(include_path: str) -> str:
  if fs.is_url(include_path):
    raise ValueError(f"--include_path={include_path}: lm-eval reads task YAMLs from a local "
                     "folder only; copy them to one (gcloud storage cp -r / aws s3 cp "
                     "--recursive) and pass that folder")
  if not os.path.isdir(include_path):
    raise ValueError(f"--include_path={include_path!r} is not a directory")
  return os.path.abspath(include_path)


def task_manager(tasks: Sequence[str], include_path: str | None = None):
  """lm-eval's TaskManager (one per process and paths) that finds `tasks`.

  The paper's tasks come from the local data (phd_jax/eval/paper_suite.py) when
  `make eval-data` has fetched it, else from lm-eval's built-in configs, which download from the
  Hugging Face hub; with the offline variables set and no local data that fails here, naming
  the tasks. When every task is local, the built-in index (thousands of YAMLs, ~10 s) is skipped.
  """
  paths = []
  paper = [t for t in tasks if t in PAPER_TASKS or t.startswith("mmlu")]
  if paper and eval_data.present():
    paths.append(paper_suite.task_folder(eval_data.root()))
  elif paper and offline():
    raise ValueError(f"task(s) {', '.join(paper)} need data: none in {eval_data.root()} and "
                     f"the Hugging Face hub is off ({'/'.join(OFFLINE_VARS)}): run `make "
                     f"eval-data` (or phd-eval-data) once to fetch the paper's benchmarks")
  if include_path:
    paths.append(_include_folder(include_path))  # after the paper's: a user's task wins
  if paths:
    local = _manager(tuple(paths), False)
    if all(t in local.all_tasks for t in tasks):
      return local
  return _manager(tuple(paths), True)


def resolve_tasks(tasks: Sequence[str], include_path: str | None = None):
  """The TaskManager that knows every task in `tasks`; unknown names fail here, before any model
  is loaded or any dataset fetched."""
  manager = task_manager(tasks, include_path)
  unknown = [t for t in tasks if t not in manager.all_tasks]
  if unknown:
    raise ValueError(f"unknown lm-eval task(s) {unknown}: not built in and not in "
                     f"include_path={include_path!r}")
  return manager


def load_tasks(tasks: Sequence[str], manager) -> list:
  """The built tasks and groups (lm-eval's objects, datasets loaded), with bpb added to every
  multiple-choice task (phd_jax/eval/bpb.py); each group as one object, so results keep it."""
  built = []
  for name in tasks:
    loaded = manager.load([name])
    add_bpb(loaded)
    built += [loaded["groups"][name]] if name in loaded["groups"] else loaded["tasks"].values()
  return built


def scored_splits(built: Sequence) -> dict[str, str]:
  """{task: the split scored}; a group names its tasks' split(s)."""
  from lm_eval.api.group import Group
  out = {}
  for obj in built:
    if isinstance(obj, Group):
      used = sorted({paper_suite.scored_split(t) for t in obj.get_all_tasks()})
      out[obj.name] = ",".join(used)
    else:
      out[obj.task_name] = paper_suite.scored_split(obj)
  return out


def run_tasks(lm: PHDLM, tasks: Sequence[str], manager, *, limit: int | None = None,
              num_fewshot: int | None = None, log_samples: bool = False) -> dict:
  """lm-eval's simple_evaluate over `lm`; returns its output ({"results": {task: {...}}, ...})
  plus "splits": {task: the split scored}."""
  import lm_eval
  built = load_tasks(tasks, manager)
  out = lm_eval.simple_evaluate(model=lm, tasks=built, task_manager=manager, limit=limit,
                                num_fewshot=num_fewshot, log_samples=log_samples,
                                bootstrap_iters=0)
  out["splits"] = scored_splits(built)
  return out


def write_json(path: str, results: dict) -> None:
  """Atomic write of lm-eval's output (its own serialiser for the non-JSON values); a bucket URL
  gets the whole object once the JSON is complete."""
  from lm_eval.utils import handle_non_serializable
  with fs.atomic_open(path) as f:
    json.dump(results, f, indent=2, default=handle_non_serializable, ensure_ascii=False)


def flatten_results(results: dict, only: Sequence[str] | None = None) -> dict[str, float]:
  """lm-eval's {"results": {task: {"acc,none": x, "acc_stderr,none": ..}}} -> {"eval/task/acc": x}.

  Standard errors and non-numeric fields are left out; a filter other than "none" is kept in the
  name (eval/task/exact_match/strict-match). `only`: these tasks and groups (mmlu, not its 57
  subjects and 4 subgroups).
  """
  row = {}
  for task, metrics in results["results"].items():
    if only is not None and task not in only:
      continue
    for key, value in metrics.items():
      metric, _, filt = key.partition(",")
      if not filt or "_stderr" in metric or not isinstance(value, (int, float)):
        continue
      row[f"eval/{task}/{metric}" + ("" if filt == "none" else f"/{filt}")] = float(value)
  return row
