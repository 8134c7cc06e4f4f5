"""phd-evaluate loses nothing and says what it scored: --out's folder is made (or refused) before
anything loads, every task's data is loaded before the model (all failures named in one line),
an unexpected error is one line (a traceback with --verbose), and the results JSON records the
run, step, fingerprints, seq_len, splits, standard errors and contexts cut to fit seq_len."""
import json
import math
import os
import time

import pytest

from phd_jax.data.tokenizers import ByteTokenizer
from tests import commands
from tests.helpers import DOCS, VANILLA_RUN, tiny_config, tiny_model

SEQ_LEN = VANILLA_RUN["seq_len"]  # shorter than most toy prompts + answers: contexts are cut


@pytest.fixture
def run(corpus_glob, trained_runs):
  return str(trained_runs(tiny_config(corpus_glob, **VANILLA_RUN)))  # 2 steps


def evaluate(*args, workdir):
  return commands.phd("phd-evaluate", f"--workdir={workdir}", *args, timeout=600, expect=None)


def one_error_line(proc):
  """The error line (lm-eval's own warnings about a task may come before it), no traceback."""
  lines = proc.stderr.strip().splitlines()
  errors = [line for line in lines if line.startswith("error: ")]
  assert proc.returncode == 1 and errors == lines[-1:], lines[-5:]
  assert "Traceback" not in proc.stderr
  return errors[0]


@pytest.mark.integration
def test_results_say_what_they_scored_and_samples_are_kept(run, local_task, tmp_path):
  out = tmp_path / "new" / "folder" / "toy.json"  # no such folder yet: made before anything runs
  proc = evaluate("--tasks=toy_mc", f"--include_path={local_task}", f"--out={out}",
                  "--log_samples", workdir=run)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(out.read_text())
  meta = results["run"]
  assert (meta["workdir"], meta["step"], meta["seq_len"]) == (run, 2, SEQ_LEN)
  assert meta["tokenizer"] == "bytes" and len(meta["config_fingerprint"]) == 16
  assert results["config"]["model_args"] == {"workdir": run, "step": 2}
  choices = sum(len(d["choices"]) for d in DOCS)
  cut = [len(d["question"].encode()) + 1 + len(c.encode()) - 1 - SEQ_LEN
         for d in DOCS for c in d["choices"]]  # context tokens the window leaves out
  assert meta["tasks"]["toy_mc"] == {"split": "test", "requests": choices,
                                     "cut_from_left": sum(c > 0 for c in cut),
                                     "longest_cut": max(cut)}
  assert (f"warning: toy_mc: {sum(c > 0 for c in cut)} of {choices} requests" in proc.stderr
          and f"(longest cut: {max(cut)} tokens)" in proc.stderr)

  row = results["results"]["toy_mc"]
  n = len(DOCS)
  for metric in ("acc", "acc_norm"):  # closed form: sample std of 0/1 scores over sqrt(n)
    p = row[f"{metric},none"]
    assert row[f"{metric}_stderr,none"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))
  assert row["bpb_stderr,none"] > 0

  samples = (tmp_path / "new" / "folder" / "toy_samples_toy_mc.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in samples]
  assert sorted(r["doc_id"] for r in records) == list(range(n))
  assert all({"acc", "acc_norm", "bpb", "resps", "arguments"} <= set(r) for r in records)
  assert sum(r["acc"] for r in records) / n == pytest.approx(row["acc,none"])
  assert "samples" not in results  # kept beside the results, not inside them


@pytest.mark.integration
def test_a_bad_out_is_refused_before_anything_loads(tmp_path):
  (tmp_path / "file").write_text("")
  for out, match in ((tmp_path, "is a directory"), (tmp_path / "file" / "r.json", "cannot write")):
    start = time.time()
    proc = evaluate("--tasks=toy_mc", f"--out={out}", workdir=str(tmp_path / "no_run"))
    assert match in one_error_line(proc)
    assert time.time() - start < 30  # no task index read, no model loaded


@pytest.mark.integration
def test_every_task_that_cannot_load_is_named_before_the_model_loads(local_task, tmp_path):
  tasks = tmp_path / "tasks"
  tasks.mkdir()
  for name in ("broken_a", "broken_b"):  # a split its data does not have: KeyError 'train'
    (tasks / f"{name}.yaml").write_text(
        open(os.path.join(local_task, "toy.yaml")).read()
         .replace("task: toy_mc", f"task: {name}").replace("test_split: test",
                                                            "test_split: train"))
  proc = evaluate("--tasks=broken_a,broken_b", f"--include_path={tasks}",
                  workdir=str(tmp_path / "no_run"))  # no checkpoint: never reached
  line = one_error_line(proc)
  assert "2 of 2 task(s) cannot load" in line and "broken_a (KeyError" in line
  assert "broken_b (KeyError" in line and "split names" in line


@pytest.mark.integration
def test_an_unexpected_error_is_one_line_and_verbose_shows_it(run, local_task, tmp_path):
  tasks = tmp_path / "tasks"
  tasks.mkdir()
  (tasks / "broken.py").write_text(
      "def process_results(doc, results):\n  raise RuntimeError('scoring failed here')\n")
  (tasks / "broken.yaml").write_text(
      open(os.path.join(local_task, "toy.yaml")).read().replace("task: toy_mc", "task: broken")
      + "process_results: !function broken.process_results\n")
  args = ("--tasks=broken", f"--include_path={tasks}")
  line = one_error_line(evaluate(*args, workdir=run))
  assert line == "error: RuntimeError: scoring failed here (--verbose shows the traceback)"
  verbose = evaluate(*args, "--verbose", workdir=run)
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr
  assert "scoring failed here" in verbose.stderr


def test_contexts_longer_than_seq_len_are_counted_by_the_adapter():
  from lm_eval.api.instance import Instance

  from phd_jax.eval.harness import PHDLM
  lm = PHDLM(tiny_model("phd_cswa"), ByteTokenizer(), SEQ_LEN, batch_size=2)
  reqs = [Instance("loglikelihood", {}, ("x" * 30, " ab"), 0, ("t", 0, 1)),
          Instance("loglikelihood", {}, ("short", " ab"), 0, ("t", 1, 1)),
          Instance("loglikelihood", {}, ("y" * 5, " " + "z" * 40), 0, ("u", 0, 1))]
  lm.loglikelihood(reqs)
  assert lm.cut_report() == {  # 30 + 3 tokens, 16 inputs; the 41-token answer's first window
      "t": {"requests": 2, "cut_from_left": 1, "longest_cut": 30 + 3 - 1 - SEQ_LEN},
      "u": {"requests": 1, "cut_from_left": 1, "longest_cut": 5 + SEQ_LEN - 1 - SEQ_LEN}}
