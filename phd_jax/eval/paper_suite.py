"""The paper's seven benchmarks as lm-eval tasks over the cached data (phd_jax/eval/eval_data.py).

Each task is lm-eval's own built-in config, `include`d by absolute path, with only the dataset
swapped: `dataset_path: arrow` over the cached split files. Prompts, choices, targets, metrics,
few-shot rules and task names are lm-eval's (tests/eval/test_paper_suite.py compares the
requests document by document). Splits the wheel does not ship are set to null, so lm-eval
scores the split that is there: ARC's test split is absent, so ARC is scored on validation
(like hellaswag, piqa, winogrande and commonsense_qa, whose labelled split is validation in lm-eval
too); their few-shot examples, when asked for, come from that split, the scored document left
out. MMLU keeps lm-eval's own splits (test scored, dev for few-shot) and its group YAMLs, copied
unchanged, so results stay keyed `mmlu`, `mmlu_stem`, ..., `mmlu_<subject>`.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import yaml

from phd_jax.eval import eval_data

_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
# Built-in configs, relative to lm_eval/tasks/ (mmlu: one file per subject plus group files).
BUILTIN = {
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml",
    "commonsense_qa": "commonsense_qa/default.yaml",
}
MMLU_DIR = "mmlu/default"
MMLU_GROUPS = ("_mmlu.yaml", "_mmlu_stem.yaml", "_mmlu_other.yaml",
               "_mmlu_social_sciences.yaml", "_mmlu_humanities.yaml")


def builtin_dir() -> str:
  import lm_eval.tasks
  return os.path.dirname(lm_eval.tasks.__file__)


def builtin_yaml(task: str) -> str:
  """Absolute path of lm-eval's own config for a paper task or an mmlu_<subject> task."""
  rel = BUILTIN.get(task) or os.path.join(MMLU_DIR, f"{task}.yaml")
  return os.path.join(builtin_dir(), rel)


def builtin_config(task: str) -> dict:
  """lm-eval's config of `task`, includes resolved, `!function`s left as names."""
  from lm_eval.tasks._yaml_loader import load_yaml
  path = builtin_yaml(task)
  if not os.path.isfile(path):
    raise ValueError(f"lm-eval {_lm_eval_version()} has no config for {task} at {path}")
  cfg = load_yaml(path, resolve_func=False)
  if cfg.get("task") != task:
    raise ValueError(f"{path} defines task {cfg.get('task')!r}, not {task!r} "
                     f"(lm-eval {_lm_eval_version()} moved its configs?)")
  return cfg


def _lm_eval_version() -> str:
  from importlib.metadata import version
  return version("lm_eval")


def overrides(task: str, files: dict[str, list[str]]) -> dict:
  """The fields that swap `task`'s dataset for the local split files {split: [arrow files]}."""
  cfg = builtin_config(task)
  out = {"task": task, "dataset_path": "arrow", "dataset_name": None,
         "dataset_kwargs": {"data_files": files}}
  for key in _SPLIT_KEYS:
    if cfg.get(key) is not None and cfg[key] not in files:
      out[key] = None  # not shipped: lm-eval falls back to the split that is
  scored = {**cfg, **out}
  if scored.get("validation_split") is None and scored.get("test_split") is None:
    raise ValueError(f"{task}: none of its scored splits is in the local data {sorted(files)}")
  return out


def write_task_yaml(folder: str, task: str, files: dict[str, list[str]]) -> str:
  path = os.path.join(folder, f"{task}.yaml")
  with open(path, "w") as f:  # `include` first: the fields below override it
    yaml.safe_dump({"include": builtin_yaml(task)}, f)
    yaml.safe_dump(overrides(task, files), f, sort_keys=False)
  return path


@functools.lru_cache(maxsize=4)
def task_folder(data_root: str) -> str:
  """A folder of task YAMLs (one per paper task and mmlu subject, plus mmlu's groups) over the
  data in `data_root`; written once per process into a temporary folder removed at exit, so it
  always matches the lm-eval that is installed."""
  out = tempfile.mkdtemp(prefix="phd_jax_paper_tasks-")
  atexit.register(shutil.rmtree, out, True)
  for task in eval_data.DATASETS:
    for name, folder in eval_data.dataset_folders(task, data_root).items():
      if not os.path.isdir(folder):
        raise ValueError(f"{folder} is missing: the eval data in {data_root} is incomplete; "
                         "delete its manifest.json and run `make eval-data` again")
      write_task_yaml(out, name, eval_data.splits(folder))
  for group in MMLU_GROUPS:
    shutil.copy(os.path.join(builtin_dir(), MMLU_DIR, group), out)
  return out


def scored_split(task) -> str:
  """The split lm-eval scores for a built task (its test split when it has one)."""
  return task.config.test_split if task.has_test_docs() else task.config.validation_split
