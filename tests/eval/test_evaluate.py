"""lm-eval adapter: exact log-likelihoods, rolling windows, generation, and lm-eval end to end.

Every number the adapter gives is checked against an independent reference: one unpadded forward
pass per request through the model, and log_softmax by hand.
"""
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx
from lm_eval.api.instance import Instance

from configs import model_tiny
from phd_jax.data.tokenizers import ByteTokenizer
from phd_jax.eval.harness import PHDLM, bucket, cut_at_stop
from phd_jax.eval.tasks import PAPER_TASKS, expand_tasks
from phd_jax.inference import decode
from tests import commands
from tests.helpers import DOCS, SMALL_PHD, brute_force_accuracy, tiny_model

SEQ_LEN = 32


def request(kind, *args):
  return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@pytest.fixture(scope="module")
def reference_forward():
  """One compiled unpadded forward per (model, length): log_softmax [L, V] of a token list."""
  fwd = nnx.jit(lambda model, t: jax.nn.log_softmax(model(t), axis=-1))
  return lambda model, ids: np.asarray(fwd(model, np.asarray([ids], np.int32)))[0]


def reference_loglikelihood(forward, model, context, continuation):
  """Independent scoring: bytes, EOS for an empty context, left-cut to SEQ_LEN inputs; a
  context's trailing spaces are scored as part of the continuation (lm-eval's HF convention)."""
  stripped = context.rstrip(" ")
  context, continuation = stripped, context[len(stripped):] + continuation
  ctx = list(context.encode()) or [ByteTokenizer.eos_id]
  cont = list(continuation.encode())
  full = (ctx + cont)[-(SEQ_LEN + 1):]
  logp = forward(model, full[:-1])  # [L, V]
  rows = np.arange(len(full) - 1 - len(cont), len(full) - 1)  # the continuation's predictions
  targets = np.asarray(full[1:])[rows]
  return (float(logp[rows, targets].sum()), bool((logp[rows].argmax(-1) == targets).all()))


PAIRS = [  # (context, continuation); three input lengths (5, 13, 32), so few reference compiles
    ("", "hello"),  # empty context: EOS
    ("ab", "cdef"),
    ("Ans: ", "B"),  # trailing space: scored with the continuation
    ("The cat sat", " on"),
    ("0123456789", "abcd"),
    ("abc", "d" * 11),
    ("A long context " * 6, "that is cut from the left"),  # cut from the left
    ("x" * 20, "y" * 13),
]


@pytest.mark.parametrize("variant", list(SMALL_PHD))
def test_loglikelihood_is_the_summed_log_softmax(variant, reference_forward):
  model = tiny_model(variant)
  got = PHDLM(model, ByteTokenizer(), SEQ_LEN, batch_size=8).loglikelihood(
      [request("loglikelihood", c, x) for c, x in PAIRS])
  for (context, continuation), (lp, greedy) in zip(PAIRS, got):
    want_lp, want_greedy = reference_loglikelihood(reference_forward, model, context, continuation)
    np.testing.assert_allclose(lp, want_lp, rtol=1e-5, atol=1e-4, err_msg=repr(context))
    assert greedy == want_greedy, (context, continuation)


def test_greedy_flag_is_true_exactly_for_the_models_own_greedy_continuation():
  model = tiny_model("phd_cswa")
  lm = PHDLM(model, ByteTokenizer(), SEQ_LEN, batch_size=2)
  prompt = list(b"Once upon")
  ids, _ = decode.generate(model, [prompt], 6, eos_id=None)
  greedy = [int(i) for i in ids[0]]
  other = greedy[:3] + [(greedy[3] + 1) % 256] + greedy[4:]
  (lp, is_greedy), (lp2, not_greedy) = lm.score_tokens([(prompt, greedy), (prompt, other)])
  assert is_greedy and not not_greedy and lp > lp2


def test_batch_sizes_and_padding_give_the_same_numbers():
  model = tiny_model("phd_cswa")
  reqs = [request("loglikelihood", c, x) for c, x in PAIRS]
  one = PHDLM(model, ByteTokenizer(), SEQ_LEN, batch_size=1).loglikelihood(reqs)
  eight = PHDLM(model, ByteTokenizer(), SEQ_LEN, batch_size=8).loglikelihood(reqs)
  np.testing.assert_allclose([lp for lp, _ in one], [lp for lp, _ in eight], rtol=1e-5, atol=1e-5)
  assert [g for _, g in one] == [g for _, g in eight]


def test_buckets_are_powers_of_two_up_to_seq_len():
  assert [bucket(n, 32) for n in (1, 16, 17, 32)] == [16, 16, 32, 32]
  assert bucket(100, 256) == 128 and bucket(200, 160) == 160


def test_loglikelihood_rolling_is_the_sum_over_windows(reference_forward):
  model = tiny_model("phd_swa")
  text = "".join(chr(97 + (i * 7) % 26) for i in range(83))  # 83 tokens: 2 full windows + 19
  got, = PHDLM(model, ByteTokenizer(), SEQ_LEN, batch_size=4).loglikelihood_rolling(
      [request("loglikelihood_rolling", text)])
  ids = [ByteTokenizer.eos_id] + list(text.encode())  # ids[i + 1] is predicted from ids[:i + 1]
  want = 0.0
  for start in range(0, len(ids) - 1, SEQ_LEN):  # windows predicting ids[start+1 : start+33]
    stop = min(start + SEQ_LEN, len(ids) - 1)
    begin = max(0, stop - SEQ_LEN)  # the last window reads a full SEQ_LEN of context
    logp = reference_forward(model, ids[begin:stop])
    for i in range(start, stop):
      want += logp[i - begin, ids[i + 1]]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # The whole text is scored exactly once: 83 tokens in windows of 32, 32 and 19.
  assert [len(p) for _, p in PHDLM(model, ByteTokenizer(), SEQ_LEN).rolling_windows(text)] == [
      32, 32, 19]


def test_generate_until_is_greedy_generate_cut_at_the_stop_string():
  model = tiny_model("phd_cswa")
  tok = ByteTokenizer()
  prompts = ["The quick", "brown fox jumps"]
  ids, n = decode.generate(model, [tok.encode(p) for p in prompts], 12, eos_id=tok.eos_id)
  full = [tok.decode(row[:k]) for row, k in zip(ids, n)]
  stop = full[0][4:6]  # a string the first continuation contains
  assert stop and stop in full[0]
  got = PHDLM(model, tok, SEQ_LEN, batch_size=4).generate_until([
      request("generate_until", prompts[0], {"until": [stop], "max_gen_toks": 12}),
      request("generate_until", prompts[1], {"until": "\x00never", "max_gen_toks": 12})])
  assert got == [full[0][:full[0].index(stop)], full[1]]


def test_generate_until_cuts_long_prompts_to_leave_room_for_the_answer():
  model = tiny_model("vanilla")
  tok = ByteTokenizer()
  prompt = "0123456789" * 5  # 50 bytes > seq_len
  got, = PHDLM(model, tok, SEQ_LEN).generate_until(
      [request("generate_until", prompt, {"until": [], "max_gen_toks": 8})])
  ids, n = decode.generate(model, [tok.encode(prompt)[-(SEQ_LEN - 8):]], 8, eos_id=tok.eos_id)
  assert got == tok.decode(ids[0, :n[0]])


def test_cut_at_stop_takes_the_earliest_stop():
  assert cut_at_stop("abc\n\nQ: d", ["Q:", "\n\n"]) == "abc"
  assert cut_at_stop("abc", ["", "z"]) == "abc"


def test_paper_tasks_expand_to_the_harness_names():
  assert expand_tasks("paper") == ["arc_easy", "arc_challenge", "hellaswag", "piqa",
                                   "winogrande", "mmlu", "commonsense_qa"]
  assert expand_tasks("toy, paper,arc_easy") == ["toy"] + list(PAPER_TASKS)
  assert expand_tasks("") == []


def test_paper_tasks_are_known_to_lm_eval():
  """Every name resolves in lm-eval's built-in task index (reads YAMLs, downloads nothing)."""
  from phd_jax.eval.tasks import task_manager
  known = task_manager(PAPER_TASKS).all_tasks
  assert [t for t in PAPER_TASKS if t not in known] == []


# ----- end to end: a fresh run, the toy task through lm-eval, in-training evals -----
@pytest.mark.integration
@pytest.mark.parametrize("variant", ["phd_cswa", "vanilla"])
def test_a_fresh_run_evaluates_in_training_and_from_the_command_line(variant, corpus_glob,
                                                                     local_task, tmp_path):
  from phd_jax.checkpoints.load import load_run
  from phd_jax.train.loop import train_and_evaluate
  cfg = model_tiny.get_config(variant)
  cfg.model.init_std = 0.3
  cfg.data.update(source="text_files", text_files=corpus_glob)
  cfg.train.update(steps=4, batch_size=4, seq_len=64, val_every=100, val_batches=1,
                   checkpoint_every=100, log_every=2, warmup_steps=1, learning_rate=1e-3,
                   sample_tokens=0)
  cfg.eval.update(tasks="toy_mc", include_path=local_task, every=2, batch_size=4)
  workdir = str(tmp_path / "run")
  train_and_evaluate(cfg, workdir)

  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    evals = [r for r in map(json.loads, f) if "eval/toy_mc/acc" in r]
  assert [r["step"] for r in evals] == [2, 4]

  out = tmp_path / "results.json"  # --output: --out's earlier name
  proc = commands.phd("phd-evaluate", f"--workdir={workdir}", "--tasks=toy_mc",
                      f"--include_path={local_task}", "--batch_size=3", f"--output={out}",
                      timeout=600)
  assert "toy_mc" in proc.stdout and "acc_norm" in proc.stdout  # lm-eval's table
  cli = json.loads(out.read_text())["results"]["toy_mc"]

  model, _, step = load_run(workdir)
  assert step == 4
  acc, acc_norm, bpb = brute_force_accuracy(model, 64)
  assert cli["acc,none"] == pytest.approx(acc) and cli["acc_norm,none"] == pytest.approx(acc_norm)
  assert cli["bpb,none"] == pytest.approx(bpb, rel=1e-5)
  assert evals[-1]["eval/toy_mc/bpb"] == pytest.approx(bpb, rel=1e-5)
  assert evals[-1]["eval/toy_mc/acc"] == pytest.approx(acc)  # the live parameters at step 4
  assert evals[-1]["eval/toy_mc/acc_norm"] == pytest.approx(acc_norm)
  assert cli["sample_len"] == len(DOCS)


@pytest.mark.parametrize("field, value", [("every", 0), ("limit", -1), ("batch_size", 0),
                                          ("num_fewshot", -2), ("include_path", "/no/such")])
def test_bad_eval_fields_are_refused_by_name(field, value):
  from phd_jax.config import validate_config
  cfg = model_tiny.get_config()
  cfg.eval[field] = value
  with pytest.raises(ValueError, match=rf"config\.eval\.{field}="):
    validate_config(cfg, ByteTokenizer.vocab_size)


def test_an_unknown_in_training_task_fails_before_training(tmp_path):
  from phd_jax.eval.tasks import config_tasks
  from phd_jax.train.hooks import LmEvalHook
  cfg = model_tiny.get_config()
  cfg.eval.tasks = "arc_easy,no_such_task"  # the built-in index is read (cached per process)
  with pytest.raises(ValueError, match=r"config\.eval\.tasks=.*\['no_such_task'\]"):
    config_tasks(cfg.eval)  # at the run's start (tests/train/test_startup_io.py: before the state)
  cfg.eval.tasks = ""
  assert config_tasks(cfg.eval) == ([], None)
  assert not LmEvalHook(cfg, None, None, [], None).due(cfg.train.steps)  # no tasks: never runs


def test_a_continuation_longer_than_seq_len_is_scored_in_windows(reference_forward):
  """Every continuation token once, each window reading the seq_len tokens before its block:
  the sum equals scoring each window on its own with an unpadded forward pass."""
  model = tiny_model("phd_cswa")
  lm = PHDLM(model, ByteTokenizer(), SEQ_LEN, batch_size=4)
  ctx, cont = list(b"Question: which? Answer:"), list(b" " + b"a long answer, " * 6)  # 91 > 32
  windows = lm.windows(ctx, cont)
  assert [n for _, n in windows] == [32, 32, 27]  # blocks of seq_len targets
  assert all(len(w) <= SEQ_LEN + 1 for w, _ in windows)
  assert sum((w[-n:] for w, n in windows), []) == cont  # each continuation token exactly once
  want = [reference_loglikelihood(reference_forward, model, bytes(w[:-n]).decode(),
                                  bytes(w[-n:]).decode()) for w, n in windows]
  (got, greedy), = lm.score_tokens([(ctx, cont)])
  assert got == pytest.approx(sum(lp for lp, _ in want), rel=1e-5)
  assert greedy == all(g for _, g in want)
  assert lm.windows(ctx, cont[:SEQ_LEN]) == [((ctx + cont[:SEQ_LEN])[-SEQ_LEN - 1:], SEQ_LEN)]
