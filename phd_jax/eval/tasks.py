"""lm-eval tasks by name: the paper's suite, task lookup (built-in, local YAMLs, the paper's
cached data), loading them and running them (their results files: phd_jax/eval/results.py).

Task names are resolved before any model loads, so a typo fails in a second, not after the
checkpoint is read.
"""
from __future__ import annotations

import functools
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


def is_paper_task(name: str) -> bool:
  """One of the paper's tasks, or a member of mmlu (its subjects, subgroups)."""
  return name in PAPER_TASKS or name.startswith("mmlu")


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
  paper = [t for t in tasks if is_paper_task(t)]
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


def config_tasks(eval_cfg) -> tuple[list[str], object | None]:
  """config.eval's task names and the TaskManager that knows them (None without tasks): what
  a training run evaluates, resolved at its start, so a bad name fails before anything is
  built."""
  names = expand_tasks(eval_cfg.tasks)
  if not names:
    return names, None
  try:
    return names, resolve_tasks(names, eval_cfg.include_path or None)
  except ValueError as err:
    raise ValueError(f"config.eval.tasks={eval_cfg.tasks!r} is invalid: {err}") from None


def _how_to_get(name: str) -> str:
  if is_paper_task(name):
    return "run `make eval-data` (the paper's benchmarks, offline)"
  return ("a built-in task downloads from the Hugging Face hub: run once with network access; "
          "a local task: check its YAML's dataset and split names against its data")


def load_tasks(tasks: Sequence[str], manager) -> list:
  """The built tasks and groups (lm-eval's objects, their data loaded), with bpb added to every
  multiple-choice task (phd_jax/eval/bpb.py); each group as one object, so results keep it.

  Every task is tried, so one error names each task that cannot load, and how to get it.
  """
  built, failed = [], []
  for name in tasks:
    try:
      loaded = manager.load([name])
    except Exception as e:  # lm-eval and datasets raise many kinds: missing splits, files, hub
      why = " ".join(str(e).split())[:200]
      failed.append(f"{name} ({type(e).__name__}: {why}; {_how_to_get(name)})")
      continue
    add_bpb(loaded)
    built += [loaded["groups"][name]] if name in loaded["groups"] else loaded["tasks"].values()
  if failed:
    raise ValueError(f"{len(failed)} of {len(tasks)} task(s) cannot load: " + "; ".join(failed))
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


def run_tasks(lm: PHDLM, tasks: Sequence, manager, *, limit: int | None = None,
              num_fewshot: int | None = None, log_samples: bool = False,
              bootstrap_iters: int = 0) -> dict:
  """lm-eval's simple_evaluate over `lm` on task names or `load_tasks`' objects; returns its
  output ({"results": {task: {...}}, ...}) plus "splits": {task: the split scored}.

  bootstrap_iters > 0 reports standard errors: closed form for mean metrics (acc, acc_norm,
  bpb), bootstrapped with that many draws for the few metrics without one (f1, mcc, ...).
  """
  import lm_eval
  built = load_tasks(tasks, manager) if all(isinstance(t, str) for t in tasks) else list(tasks)
  out = lm_eval.simple_evaluate(model=lm, tasks=built, task_manager=manager, limit=limit,
                                num_fewshot=num_fewshot, log_samples=log_samples,
                                bootstrap_iters=bootstrap_iters)
  out["splits"] = scored_splits(built)
  return out
