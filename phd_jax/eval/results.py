"""What an evaluation leaves behind: a results JSON that says what it scored, per-document
records, and metrics.jsonl rows; written atomically, to a place checked before anything loads.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from phd_jax import files as fs

if TYPE_CHECKING:
  from phd_jax.eval.harness import PHDLM


def prepare_output(path: str, what: str = "--out") -> None:
  """Creates the folder of a local results file, or fails with one line, before any model or
  task loads; a bucket URL must be writable."""
  if fs.is_url(path):
    fs.check_access(path, what, write=True)
    return
  if os.path.isdir(path):
    raise ValueError(f"{what}={path} is a directory: give a file name (e.g. {path}/results.json)")
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".phd_jax_write_check.{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"{what}={path}: cannot write in {folder} ({e.strerror or e})") from None


def samples_path(out: str, task: str) -> str:
  """results.json -> results_samples_<task>.jsonl beside it."""
  stem = out[:-len(".json")] if out.endswith(".json") else out
  return f"{stem}_samples_{task}.jsonl"


def write_json(path: str, results: dict) -> None:
  """Atomic write of lm-eval's output (its own serialiser for the non-JSON values); a bucket URL
  gets the whole object once the JSON is complete."""
  from lm_eval.utils import handle_non_serializable
  with fs.atomic_open(path) as f:
    json.dump(results, f, indent=2, default=handle_non_serializable, ensure_ascii=False)


def write_samples(out: str, samples: dict[str, list[dict]]) -> list[str]:
  """lm-eval's per-document records, one JSON line per document, a file per task."""
  from lm_eval.utils import handle_non_serializable
  paths = []
  for task, records in samples.items():
    paths.append(samples_path(out, task))
    with fs.atomic_open(paths[-1]) as f:
      for r in records:
        f.write(json.dumps(r, default=handle_non_serializable, ensure_ascii=False) + "\n")
  return paths


def config_fingerprint(cfg) -> str:
  """A hash of the run's whole config (its sorted JSON)."""
  return hashlib.sha256(cfg.to_json(sort_keys=True).encode()).hexdigest()[:16]


def provenance(lm: PHDLM, splits: dict[str, str]) -> dict:
  """What was scored: the run, its step and config, the tokenizer, seq_len, and per task the
  split and the requests whose context was cut from the left to fit seq_len."""
  cuts = lm.cut_report()
  tasks = {t: {"split": s, **cuts.get(t, {})} for t, s in splits.items()}
  for t, c in cuts.items():  # a group's members (mmlu_<subject>) are listed under their names
    tasks.setdefault(t, c)
  return {"workdir": lm.workdir, "step": lm.step,
          "config_fingerprint": config_fingerprint(lm.config) if lm.config else None,
          "tokenizer": lm.tokenizer.name, "tokenizer_fingerprint": lm.tokenizer.fingerprint(),
          "seq_len": lm.max_length, "tasks": tasks}


def cut_warnings(report: dict, seq_len: int) -> list[str]:
  """One line per task some of whose requests lost context tokens to seq_len."""
  return [f"warning: {t}: {r['cut_from_left']} of {r['requests']} requests "
          f"({r['cut_from_left'] / r['requests']:.1%}) had their context cut from the left to fit "
          f"seq_len={seq_len} (longest cut: {r['longest_cut']} tokens)"
          for t, r in sorted(report.items()) if r.get("cut_from_left")]


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
