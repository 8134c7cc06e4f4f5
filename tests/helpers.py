"""Shared by the tests (a helper lives here once; test modules never import each other): the
repository root, the tiny training config (in Python and as command-line flags), a run's logged
losses, the toy multiple-choice task with its brute-force scorer, and the OLMo2 golden fixtures;
a model's forward pass and gradients, compiled."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import model_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}  # the tests never download

# ----- a model, compiled -----
# Tests call a model through these: eager dispatch of a whole model (its scans, op by op) takes
# longer than compiling it once.
forward = nnx.jit(lambda model, tokens: model(tokens))  # forward(model, tokens) -> logits


def value_and_grad(loss, model, has_aux=False):
  """nnx.value_and_grad(loss, has_aux)(model), compiled."""
  return nnx.jit(lambda m: nnx.value_and_grad(loss, has_aux=has_aux)(m))(model)


def weighted_value_and_grads(attend, q, k, v, w):
  """((loss, out), (dq, dk, dv)) of loss = sum(w * attend(q, k, v)), from one compilation: a
  fixed w that differs from element to element makes every output matter to the gradients."""
  def loss(q, k, v):
    out = attend(q, k, v)
    return jnp.sum(w * out.astype(jnp.float32)), out
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)


# ----- the tiny training run -----
# One layer: the runs test what happens around the model (data, checkpoints, commands, hosts), and
# one layer traces and compiles in about 60% of two's time. The model's own parity tests (layers,
# scan, remat, decode) build model_tiny's two layers (tiny_model below).
TINY_MODEL = dict(num_layers=1)
TINY_TRAIN = dict(steps=8, batch_size=4, seq_len=32, val_every=100, val_batches=2,
                  checkpoint_every=100, log_every=1, warmup_steps=2, learning_rate=1e-2,
                  sample_tokens=0)


def tiny_config(corpus_glob, variant="phd_cswa", **train):
  cfg = model_tiny.get_config(variant)
  cfg.model.update(TINY_MODEL)
  cfg.data.update(source="text_files", text_files=corpus_glob)
  cfg.train.update({**TINY_TRAIN, **train})
  return cfg


# Trained runs that tests of several modules read: tiny_config(corpus_glob, **RUN) of each is
# trained once per session (conftest.py's trained_runs fixture) however many tests read it.
LONG_RUN = dict(steps=20)  # long enough to learn, and to be preempted midway from outside
RESUMABLE_RUN = dict(steps=8, checkpoint_every=2, keep_checkpoints=3)  # checkpoints 4, 6 and 8
WIDE_RUN = dict(steps=4, batch_size=8)  # a batch that 8 devices split
VANILLA_RUN = dict(variant="vanilla", steps=2, seq_len=16)  # K=1: exports to OLMo2


def tiny_flags(corpus_glob, variant="phd_cswa", **train) -> list[str]:
  """tiny_config(corpus_glob, variant, **train) as phd-train's flags."""
  config = os.path.join(ROOT, "configs", "model_tiny.py")
  return [f"--config={config}:{variant}", "--config.data.source=text_files",
          f"--config.data.text_files={corpus_glob}"] + [
              f"--config.model.{k}={v}" for k, v in TINY_MODEL.items()] + [
              f"--config.train.{k}={v}" for k, v in {**TINY_TRAIN, **train}.items()]


def cut_short(step_dir) -> None:
  """Truncates the array data files of a checkpoint step's state to their first 4 KiB (a copy cut
  short: parameters and optimizer moments both). Not to half: OCDBT packs several arrays into one
  file in an order that varies between saves, so all the parameters may sit in the first halves
  and a params-only load (phd-generate) would still succeed; the tiny model's embedding alone
  is larger than 4 KiB."""
  folder = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
  files = [os.path.join(folder, n) for n in os.listdir(folder)
           if os.path.getsize(os.path.join(folder, n)) > 4096]
  assert files, folder
  for path in files:
    os.truncate(path, 4096)


def losses(workdir) -> dict[int, float]:
  """{step: loss} of a run's metrics.jsonl; the workdir a local path or a bucket URL."""
  from phd_jax import files
  rows = files.read_text(files.join(str(workdir), "metrics.jsonl")).splitlines()
  return {r["step"]: r["loss"] for r in map(json.loads, rows) if "loss" in r}


class Preempted(Exception):
  """Raised from train_and_evaluate's on_step: a run cut off after a step."""


def preempt_after(step: int):
  """An on_step callback that stops training after `step` (its checkpoints are kept)."""
  def on_step(s: int) -> None:
    if s == step:
      raise Preempted
  return on_step


PROMPTS = [[1, 2, 3, 4], [5, 6], [7, 8, 9], [10]]  # multidevice_worker.py's, decoded on 1 device

# ----- the toy multiple-choice task (lm-eval YAML + JSONL, no network) -----
DOCS = [  # a multiple-choice task whose choices differ in length, so acc and acc_norm differ
    {"question": "def add(a, b): return", "choices": ["a + b", "None", "a - b - 1"], "label": 0},
    {"question": "import os, sys; print(", "choices": ["os)", "sys.argv)", "1"], "label": 1},
    {"question": "for i in range(", "choices": ["10):", "len(x)):", "n)"], "label": 2},
    {"question": "class Foo(", "choices": ["object):", "Base):", "):"], "label": 0},
    {"question": "if x is", "choices": ["None:", "not None:", "True"], "label": 1},
    {"question": "return self.", "choices": ["value", "x", "_cache[key]", "name"], "label": 3},
    {"question": "while", "choices": [" True:", " x:", " not done:"], "label": 0},
    {"question": "x = [i for i in", "choices": ["range(3)]", "y]", "z if z]"], "label": 1},
]
TASK_YAML = """task: toy_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def brute_force_accuracy(model, seq_len):
  """acc, acc_norm and bpb by scoring every choice with its own forward pass: the context is the
  question, the continuation " " + choice (lm-eval's default target delimiter)."""
  import jax
  from flax import nnx
  fwd = nnx.jit(lambda m, t: jax.nn.log_softmax(m(t), axis=-1))
  acc, acc_norm, bpb = [], [], []
  for doc in DOCS:
    lls = []
    for choice in doc["choices"]:
      ctx, cont = list(doc["question"].encode()), list((" " + choice).encode())
      full = ctx + cont
      row = np.zeros((1, seq_len), np.int32)
      row[0, :len(full) - 1] = full[:-1]
      logp = np.asarray(fwd(model, row))[0]
      lls.append(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))
    lengths = np.array([len(c) for c in doc["choices"]], float)
    acc.append(np.argmax(lls) == doc["label"])
    acc_norm.append(np.argmax(np.array(lls) / lengths) == doc["label"])
    gold = " " + doc["choices"][doc["label"]]
    bpb.append(-lls[doc["label"]] / np.log(2) / len(gold.encode()))
  return float(np.mean(acc)), float(np.mean(acc_norm)), float(np.mean(bpb))


SMALL_PHD = {  # small windows and chunks, so that 32 positions cross their borders
    "vanilla": dict(variant="vanilla", num_copies=1, window=0, chunk=0),
    "phd": dict(variant="phd", num_copies=2, window=0, chunk=0),
    "phd_swa": dict(variant="phd_swa", num_copies=3, window=3, chunk=0),
    "phd_cswa": dict(variant="phd_cswa", num_copies=2, window=4, chunk=8),
    "repeat": dict(variant="repeat", num_copies=2, window=0, chunk=0),
}


def tiny_model(variant):
  """A random tiny model of `variant` (SMALL_PHD) with spread-out logits (init_std 0.3: at
  OLMo2's 0.02 its logits are nearly uniform, and scores would barely differ)."""
  from flax import nnx

  from phd_jax.model.transformer import Transformer
  m = model_tiny.get_config().model
  m.phd.update(SMALL_PHD[variant])
  m.init_std = 0.3
  return Transformer(m, rngs=nnx.Rngs(0))


# ----- OLMo2 checkpoints made by transformers (tests/interop/fixtures) -----
FIXTURES = os.path.join(ROOT, "tests", "interop", "fixtures")


def golden():
  """The logits transformers gives on fixed tokens for olmo2_tied and olmo2_untied."""
  return np.load(os.path.join(FIXTURES, "olmo2_golden.npz"))


def shard_in_two(folder):
  """The HF folder's model.safetensors split in two shards with an index, as large released
  checkpoints are; `folder` returned."""
  from safetensors.numpy import load_file, save_file
  tensors = load_file(folder / "model.safetensors")
  os.remove(folder / "model.safetensors")
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  for file, keys in shards.items():
    save_file({k: tensors[k] for k in keys}, folder / file, metadata={"format": "pt"})
  index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
  (folder / "model.safetensors.index.json").write_text(json.dumps(index))
  return folder
