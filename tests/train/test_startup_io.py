"""One training start does each start-up check once: its tokenizer is loaded once and every path
is probed once (files.check_access), counted on a real `phd-train` start whose workdir,
tokenizer and token files all lie in a bucket (the GCS emulator, tests/storage.py). And the
checks that read the eval task index and metrics.jsonl fail before the state is built.
"""
import json

import numpy as np
import pytest

from phd_jax import files as fs
from phd_jax.data import tokenizers
from phd_jax.train import setup
from tests import commands
from tests.helpers import tiny_config

# phd-train, with check_access and every tokenizer file's load counted (the real calls, passed
# through); the counts are written to argv[1] however the command ends.
COUNTED_TRAIN = """
import collections, json, sys
import phd_jax.files as files
from phd_jax.data import tokenizers
from phd_jax.files import stores
probes, loads = collections.Counter(), []
check_access = stores.check_access


def counted_check(path, what, write=False):
  probes[f"{path} write={write}"] += 1
  return check_access(path, what, write)


stores.check_access = files.check_access = counted_check
for cls in (tokenizers.HFTokenizer, tokenizers.SentencePieceTokenizer):
  def counted_init(self, path, _init=cls.__init__):
    loads.append(path)
    _init(self, path)
  cls.__init__ = counted_init
out, sys.argv = sys.argv[1], ["phd-train", *sys.argv[2:]]
from phd_jax.cli.train import main
try:
  main()
finally:
  open(out, "w").write(json.dumps({"probes": probes, "loads": loads}))
"""


def test_one_training_start_loads_its_tokenizer_once_and_probes_each_path_once(
    gs_url, bpe_path, tmp_path):
  root = f"{gs_url}/{tmp_path.name}"
  tokenizer, workdir, token_files = f"{root}/bpe.json", f"{root}/run", f"{root}/tokens/*.npy"
  fs.copy_file(bpe_path, tokenizer)
  vocab = tokenizers.load(bpe_path).vocab_size
  for i in range(3):
    local = tmp_path / f"part{i}.npy"
    np.save(local, (np.arange(400) * (i + 1) % vocab).astype(np.uint16))
    fs.copy_file(str(local), f"{root}/tokens/part{i}.npy")
  counts = tmp_path / "counts.json"
  commands.python(
      COUNTED_TRAIN, str(counts), "--config=configs/model_tiny.py",
       f"--workdir={workdir}", "--config.model.vocab_size=auto",
       "--config.data.source=tokens", f"--config.data.tokenizer={tokenizer}",
       f"--config.data.token_files={token_files}", "--config.train.steps=1",
       "--config.train.batch_size=2", "--config.train.seq_len=16",
       "--config.train.val_batches=1", "--config.train.sample_tokens=0", timeout=600)
  found = json.loads(counts.read_text())
  assert found["loads"] == [tokenizer]  # validation, vocab_size=auto, data and the copy share it
  assert found["probes"] == {f"{workdir} write=True": 1, f"{tokenizer} write=False": 1,
                             f"{token_files} write=False": 1}


@pytest.mark.parametrize("case", ["eval_task", "metrics_jsonl"])
def test_eval_tasks_and_metrics_fail_before_the_state_is_built(case, corpus_glob, tmp_path,
                                                              monkeypatch):
  def no_state(*args, **kwargs):
    pytest.fail("the state was built before the check failed")

  monkeypatch.setattr(setup, "create_state", no_state)
  cfg = tiny_config(corpus_glob, steps=1)
  if case == "eval_task":
    def unknown(tasks, include_path=None):  # the real lookup reads lm-eval's index (~10 s):
      raise ValueError(f"unknown lm-eval task(s) {tasks}")  # tests/eval/test_evaluate.py

    monkeypatch.setattr("phd_jax.eval.tasks.resolve_tasks", unknown)
    cfg.eval.tasks = "no_such_task"
    match = r"config\.eval\.tasks='no_such_task' is invalid: unknown"
  else:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot a row\n{"step": 2}\n')
    match = r"metrics\.jsonl:2 is not a JSON row of metrics"
  with pytest.raises(ValueError, match=match):
    setup.start_session(cfg, str(tmp_path))
