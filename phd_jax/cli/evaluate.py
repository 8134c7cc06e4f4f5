"""phd-evaluate: a run's latest checkpoint on lm-eval tasks.

  phd-evaluate --workdir=RUN --tasks=paper --out=results.json
      (offline once `make eval-data` / phd-eval-data has fetched the paper's benchmarks)
  phd-evaluate --workdir=RUN --tasks=my_task --include_path=tasks/   (local YAML tasks, offline)

--workdir and --out may be gs:// or s3:// URLs (one out of reach fails before the model loads);
--include_path is a local folder (lm-eval reads it itself).
"""
from __future__ import annotations

from absl import flags

from phd_jax import files as fs
from phd_jax.cli import common
from phd_jax.eval import tasks as eval_tasks
from phd_jax.eval.harness import PHDLM

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory (holds checkpoints/).")
_TASKS = flags.DEFINE_string("tasks", "paper", "lm-eval task names, comma separated; 'paper' = "
                             + ",".join(eval_tasks.PAPER_TASKS) + ".")
_INCLUDE = flags.DEFINE_string("include_path", None, "Directory of extra task YAMLs (local tasks).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Documents per task (0: all).")
_FEWSHOT = flags.DEFINE_integer("num_fewshot", None,
                                "Few-shot examples (default: each task's own).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Requests scored per forward pass.")
_OUT = flags.DEFINE_string("out", None, "Write lm-eval's results JSON here.")
flags.DEFINE_alias("output", "out")  # the flag's earlier name


def main(argv: list[str]) -> None:
  from lm_eval.utils import make_table
  del argv
  tasks = eval_tasks.expand_tasks(_TASKS.value)
  if not tasks:
    raise ValueError("--tasks is empty (task names, comma separated, or 'paper')")
  fs.check_access(_WORKDIR.value, "--workdir")  # buckets out of reach fail now, not after the
  if _OUT.value:  # task index is read or the whole evaluation has run
    fs.check_access(_OUT.value, "--out", write=True)
  manager = eval_tasks.resolve_tasks(tasks, _INCLUDE.value)
  lm = PHDLM.from_run(_WORKDIR.value, _BATCH.value)  # the newest step that loads
  print(f"# {_WORKDIR.value}, checkpoint step {lm.step}", flush=True)
  try:
    results = eval_tasks.run_tasks(lm, tasks, manager, limit=_LIMIT.value or None,
                                   num_fewshot=_FEWSHOT.value)
  except OSError as e:  # datasets that need the network (HF hub) while offline, unreadable files
    raise ValueError(f"{type(e).__name__}: {e} (the harness's own tasks download their datasets "
                     "from the Hugging Face hub: for the paper's tasks run `make eval-data` once, "
                     "for others run once with network access, or use local tasks)") from None
  print("# scored splits: " + ", ".join(f"{t}={s}" for t, s in results["splits"].items()))
  print(make_table(results))
  if "groups" in results:
    print(make_table(results, "groups"))
  if _OUT.value:
    eval_tasks.write_json(_OUT.value, results)
    print(f"results written to {_OUT.value}")


def run() -> None:
  common.run(main, required=["workdir"])


if __name__ == "__main__":
  run()
