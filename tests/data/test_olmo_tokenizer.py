"""OLMo's real tokenizer (gpt-neox-olmo-dolma-v1_5, from the eval data `make eval-data` fetches)
end to end, offline: prepare token shards with it, train, and score the paper's tasks."""
import json
import math
import os

import pytest

from phd_jax.data import prepare, tokenizers
from phd_jax.eval import eval_data
from phd_jax.eval import tasks as eval_tasks
from phd_jax.eval.harness import PHDLM
from phd_jax.train.loop import train_and_evaluate
from tests.helpers import tiny_config


@pytest.mark.integration
@pytest.mark.slow  # prepare, train and evaluate with a 50k vocabulary (make test-all)
def test_olmo_tokenizer_prepares_trains_and_evaluates(eval_data_root, corpus_glob, tmp_path):
  path = eval_data.olmo_tokenizer(eval_data_root)
  tok = tokenizers.load(path)
  assert (tok.vocab_size, tok.eos_id) == (50280, 50279)  # OLMo's <|endoftext|>
  text = "def value(self):\n    return 'café' + \"\\t\""
  assert tok.decode(tok.encode(text)) == text
  assert len(tok.encode(text)) < len(text.encode()) / 2  # subwords, not bytes

  token_dir = str(tmp_path / "tok")
  meta = prepare.prepare(input=corpus_glob, tokenizer=path, out=token_dir, val_fraction=0.2,
                         progress=False)
  assert meta["tokenizer"]["fingerprint"] == tok.fingerprint()
  cfg = tiny_config("", steps=4, seq_len=64, val_every=4, val_batches=1, checkpoint_every=4)
  cfg.model.vocab_size = 50304  # 50,280 rounded up to a multiple of 128
  cfg.data.update(source="tokens", text_files="", tokenizer=path, token_dir=token_dir)
  workdir = str(tmp_path / "run")
  train_and_evaluate(cfg, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    val = [r["val_bits_per_byte"] for r in map(json.loads, f) if "val_bits_per_byte" in r]
  assert val and all(math.isfinite(v) and v > 0 for v in val)

  lm = PHDLM.from_run(workdir)
  assert lm.tokenizer.fingerprint() == tok.fingerprint()  # the run's own copy
  names = ["arc_easy", "piqa"]
  results = eval_tasks.run_tasks(lm, names, eval_tasks.resolve_tasks(names), limit=4,
                                 log_samples=True)
  for task in names:
    row = results["results"][task]
    assert 0 <= row["acc,none"] <= 1 and math.isfinite(row["bpb,none"]), row
    for s in results["samples"][task]:  # bpb counts the gold continuation's bytes, not tokens
      gold = s["target"]
      ll = s["filtered_resps"][gold][0]
      n_bytes = len(s["arguments"][gold][1].encode())
      assert s["bpb"] == pytest.approx(-ll / math.log(2) / n_bytes)
