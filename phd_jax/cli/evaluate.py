"""phd-evaluate: a run's latest checkpoint on lm-eval tasks.

  phd-evaluate --workdir=RUN --tasks=paper --out=results.json
      (offline once `make eval-data` / phd-eval-data has fetched the paper's benchmarks)
  phd-evaluate --workdir=RUN --tasks=my_task --include_path=tasks/   (local YAML tasks, offline)

--workdir and --out may be gs:// or s3:// URLs (one out of reach fails before the model loads);
--include_path is a local folder (lm-eval reads it itself).
"""
from __future__ import annotations

import sys

from absl import flags

from phd_jax import files as fs
from phd_jax.cli import common
from phd_jax.eval import results as eval_results
from phd_jax.eval import tasks as eval_tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory (holds checkpoints/).")
_TASKS = flags.DEFINE_string("tasks", "paper", "lm-eval task names, comma separated; 'paper' = "
                             + ",".join(eval_tasks.PAPER_TASKS) + ".")
_INCLUDE = flags.DEFINE_string("include_path", None, "Directory of extra task YAMLs (local tasks).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Documents per task (0: all).")
_FEWSHOT = flags.DEFINE_integer("num_fewshot", None,
                                "Few-shot examples (default: each task's own).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Requests scored per forward pass.")
_OUT = flags.DEFINE_string("out", None, "Write the results JSON here (its folder is created).")
flags.DEFINE_alias("output", "out")  # the flag's earlier name
_LOG_SAMPLES = flags.DEFINE_bool(
    "log_samples", False, "Also write every document's record (lm-eval's format) beside --out, "
    "one OUT_samples_<task>.jsonl per task.")
_BOOTSTRAP = flags.DEFINE_integer(
    "bootstrap_iters", 100, "Standard errors: closed form for acc, acc_norm and bpb; metrics "
    "without one (f1, mcc, ...) are bootstrapped with this many draws. 0: no standard errors.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an unexpected error.")


def _main(argv: list[str]) -> None:
  del argv
  tasks = eval_tasks.expand_tasks(_TASKS.value)
  if not tasks:
    raise ValueError("--tasks is empty (task names, comma separated, or 'paper')")
  if _LOG_SAMPLES.value and not _OUT.value:
    raise ValueError("--log_samples writes beside the results: give --out=FILE.json")
  fs.check_access(_WORKDIR.value, "--workdir")  # buckets out of reach fail now, not after the
  if _OUT.value:  # task index is read or the whole evaluation has run
    eval_results.prepare_output(_OUT.value)
  try:
    evaluate(tasks)
  except ValueError:
    raise
  except Exception as e:  # the harness and datasets raise many kinds: one line, not a traceback
    if _VERBOSE.value:
      raise
    why = " ".join(str(e).split())[:300]
    raise ValueError(f"{type(e).__name__}: {why} (--verbose shows the traceback)") from None


def evaluate(tasks: list[str]) -> None:
  from lm_eval.utils import make_table

  from phd_jax.eval.harness import PHDLM  # lm-eval's model stack: after the checks above
  common.libraries_loaded()
  manager = eval_tasks.resolve_tasks(tasks, _INCLUDE.value)
  built = eval_tasks.load_tasks(tasks, manager)  # every task's data, before the model loads
  lm = PHDLM.from_run(_WORKDIR.value, _BATCH.value, probed=True)  # main probed the workdir
  print(f"# {_WORKDIR.value}, checkpoint step {lm.step}", flush=True)
  results = eval_tasks.run_tasks(lm, built, manager, limit=_LIMIT.value or None,
                                 num_fewshot=_FEWSHOT.value, log_samples=_LOG_SAMPLES.value,
                                 bootstrap_iters=_BOOTSTRAP.value)
  results["run"] = eval_results.provenance(lm, results["splits"])
  results.setdefault("config", {})["model_args"] = {"workdir": lm.workdir, "step": lm.step}
  for line in eval_results.cut_warnings(lm.cut_report(), lm.max_length):
    print(line, file=sys.stderr)
  print("# scored splits: " + ", ".join(f"{t}={s}" for t, s in results["splits"].items()))
  print(make_table(results))
  if "groups" in results:
    print(make_table(results, "groups"))
  samples = results.pop("samples", None)
  if _OUT.value:
    eval_results.write_json(_OUT.value, results)
    print(f"results written to {_OUT.value}")
  if samples and _OUT.value:
    paths = eval_results.write_samples(_OUT.value, samples)
    print(f"per-document records: {len(paths)} files beside it ({fs.basename(paths[0])}, ...)")


def main() -> None:
  common.launch(_main, required=["workdir"])


if __name__ == "__main__":
  main()
