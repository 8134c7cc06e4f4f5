"""experiments/paper_table.py on a tiny run: its row of the paper's downstream table, the CSV
beside it, the cached evaluation a rerun reuses, and the failures it reports in one line."""
import csv
import statistics

import pytest

from phd_jax.eval.tasks import PAPER_TASKS
from phd_jax.train.loop import train_and_evaluate
from tests import commands
from tests.helpers import tiny_config


def paper_table(*args: str, **env: str):
  """The command as a user runs it, offline (the benchmarks come from the local cache)."""
  return commands.module("experiments.paper_table", *args, env=env, timeout=600, expect=None)


@pytest.mark.integration
@pytest.mark.slow  # ~30 s: an experiment script end to end (make test-all); its parts are tested
def test_paper_table_of_a_tiny_run(tmp_path, corpus_glob, eval_data_root):
  """About 30 s on 2 CPU cores: 3 training steps, then 2 documents per task."""
  run, empty, out = tmp_path / "tiny", tmp_path / "empty", tmp_path / "table" / "paper.md"
  train_and_evaluate(tiny_config(corpus_glob, steps=3), str(run))  # phd_cswa, K=2, batch 4 x 32
  done = paper_table(f"--runs={run}", f"--out={out}", "--limit=2")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "evaluated in" in done.stdout and "reused" not in done.stdout

  md = out.read_text()
  assert "first 2 documents per task" in md and "mmlu=test" in md
  rows = [line.split(" | ") for line in md.splitlines() if line.startswith("| tiny |")]
  assert len(rows) == 1 and rows[0][1:7] == ["phd_cswa", "2", "16", "32", "0.12M", "384"]
  assert any(line.startswith("| chance |") for line in md.splitlines())
  with open(out.with_suffix(".csv")) as f:
    (row,) = list(csv.DictReader(f))
  assert (row["step"], row["tokens"]) == ("3", str(3 * 4 * 32))  # checkpoint step x batch x len
  assert float(row["val_loss"]) > 0 and float(row["val_bits_per_byte"]) > 0
  acc = [float(row[f"{t}_acc"]) for t in PAPER_TASKS]
  bpb = [float(row[f"{t}_bpb"]) for t in PAPER_TASKS]
  assert all(0 <= a <= 1 for a in acc) and all(b > 0 for b in bpb)
  assert float(row["avg_acc"]) == pytest.approx(statistics.mean(acc))
  assert float(row["avg_bpb"]) == pytest.approx(statistics.mean(bpb))

  # the same checkpoint and limit: the cached results are reused, not recomputed
  cache = run / "paper_eval.json"
  stamp = cache.stat().st_mtime_ns
  again = paper_table(f"--runs={run}", f"--out={out}", "--limit=2")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "reused" in again.stdout and cache.stat().st_mtime_ns == stamp
  with open(out.with_suffix(".csv")) as f:
    (rerun,) = list(csv.DictReader(f))
  assert [rerun[f"{t}_acc"] for t in PAPER_TASKS] == [row[f"{t}_acc"] for t in PAPER_TASKS]

  # a folder without checkpoints, and a missing benchmark cache: one `error:` line each
  empty.mkdir()
  for args, env, words in (([f"--runs={run},{empty}"], {}, ["no checkpoints", str(empty)]),
                           ([f"--runs={run}"], {"PHD_JAX_EVAL_DATA": str(tmp_path / "none")},
                            ["make eval-data"])):
    failed = paper_table(*args, **env)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode == 1 and len(errors) == 1, failed.stderr[-3000:]
    assert all(w in errors[0] for w in words) and "Traceback" not in failed.stderr
