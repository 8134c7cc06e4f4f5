"""Token shards: host slices, refusals before training, exact bits/byte, training on a BPE."""
import glob
import json
import math
import os

import numpy as np
import pytest
from flax import nnx

from configs import model_1_2b, model_tiny
from phd_jax.config import validate_config
from phd_jax.config.mesh import rules as mesh_rules
from phd_jax.data import prepare, tokenizers
from phd_jax.data import tokens as token_data
from phd_jax.data.windows import load_splits, train_dataset, val_batches
from phd_jax.model import sharding
from phd_jax.train import validation
from phd_jax.train.loop import train_and_evaluate
from phd_jax.train.state import create_state
from tests import commands
from tests.helpers import tiny_config


def write_raw(path, ids, dtype="<u2"):
  np.asarray(ids).astype(dtype).tofile(path)
  return str(path)


@pytest.fixture(scope="module")
def jsonl_corpus(tmp_path_factory, corpus_glob):
  """The test corpus as jsonl, one document per line (so EOS is frequent)."""
  root = tmp_path_factory.mktemp("jsonl_corpus")
  for f in sorted(glob.glob(corpus_glob)):
    with open(root / (os.path.basename(f) + ".jsonl"), "w") as out:
      out.writelines(json.dumps({"text": line}) + "\n" for line in open(f).read().split("\n"))
  return str(root)


def prepared(root, tokenizer, name):
  prepare.prepare(input=os.path.join(root, "*.jsonl"), tokenizer=tokenizer,
                  out=os.path.join(root, name), val_fraction=0.1, progress=False)
  return os.path.join(root, name)


@pytest.fixture(scope="module")
def bpe_dir(jsonl_corpus, bpe_path):
  return prepared(jsonl_corpus, bpe_path, "bpe")


@pytest.fixture(scope="module")
def bytes_dir(jsonl_corpus):
  return prepared(jsonl_corpus, "bytes", "bytes")


def tokens_config(bpe_path, bpe_dir, **train):
  cfg = tiny_config("", **{"steps": 12, **train})
  cfg.data.update(source="tokens", text_files="", tokenizer=bpe_path, token_dir=bpe_dir)
  return cfg


def test_host_slices_are_disjoint_and_cover_the_split(tmp_path):
  # Window i starts with token i * seq_len: a window's first input names it.
  seq_len, hosts = 8, 3
  a = write_raw(tmp_path / "a.bin", np.arange(0, 8 * 20 + 1))
  b = write_raw(tmp_path / "b.bin", np.arange(1000, 1000 + 8 * 16 + 1))
  shards = [token_data._raw_shard(p, "uint16", "dtype") for p in (a, b)]
  windows = token_data.TokenWindows(shards, seq_len)
  assert len(windows) == 36
  every = {int(windows[i]["inputs"][0]) for i in range(len(windows))}
  seen = []
  for h in range(hosts):
    it = iter(train_dataset(windows, seq_len, 1, seed=3, process_index=h,
                                 process_count=hosts))
    seen.append([int(next(it)["inputs"][0, 0]) for _ in range(len(windows) // hosts)])
  assert all(not set(x) & set(y) for i, x in enumerate(seen) for y in seen[i + 1:])
  assert set().union(*map(set, seen)) == every
  w = windows[21]  # second shard: windows never straddle two shards
  np.testing.assert_array_equal(w["inputs"], np.arange(1000 + 8, 1000 + 16))
  np.testing.assert_array_equal(w["targets"], np.arange(1000 + 9, 1000 + 17))


def test_iterator_state_restores(bpe_dir):
  splits = token_data.from_token_dir(bpe_dir, tokenizers.load(
      os.path.join(bpe_dir, "tokenizer.json")), 384)
  windows = token_data.TokenWindows(splits.train, 16)
  it = iter(train_dataset(windows, 16, 2, seed=0))
  next(it)
  state, expected = it.get_state(), next(it)
  it2 = iter(train_dataset(windows, 16, 2, seed=0))
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["inputs"], expected["inputs"])


def test_external_npy_and_raw_token_files(tmp_path):
  cfg = model_tiny.get_config()
  for i in range(3):
    np.save(tmp_path / f"part{i}.npy", np.arange(200, dtype=np.uint16) % 257)
  cfg.data.update(source="tokens", token_files=str(tmp_path / "*.npy"))
  validate_config(cfg, tokenizers.ByteTokenizer.vocab_size)
  s = load_splits(cfg.data, tokenizers.ByteTokenizer(), 384, 16)
  assert len(s.train) + len(s.val) == 3 * ((200 - 1) // 16) and len(s.val) > 0
  np.testing.assert_array_equal(s.train[1]["inputs"], np.arange(16, 32))
  for i in range(3):  # OLMo-style: headerless uint32 memmaps named .npy
    write_raw(tmp_path / f"part{i}.npy", np.arange(300) % 257, "<u4")
  cfg.data.token_dtype = "uint32"
  s = load_splits(cfg.data, tokenizers.ByteTokenizer(), 384, 16)
  assert len(s.train) + len(s.val) == 3 * ((300 - 1) // 16)
  np.testing.assert_array_equal(s.train[2]["targets"], np.arange(33, 49))


@pytest.mark.parametrize("case, message", [
    ("odd_size", r"token file .*bad\.bin: 11 bytes is not a multiple of 2 "
                 r"\(config\.data\.token_dtype='uint16'\)"),
    ("out_of_range", r"token file .*bad\.bin: id 300 at position 5 is outside the vocabulary "
                     r"\[0, 257\)"),
    ("no_dtype", r"config\.data\.token_dtype='' is invalid: raw token file .*bad\.bin"),
    ("npy_dtype", r"config\.data\.token_dtype='uint16' is invalid: .*bad\.npy holds uint32"),
])
def test_bad_token_files_are_refused(tmp_path, case, message):
  write_raw(tmp_path / "good.bin", np.arange(100) % 256)
  dtype = "uint16"
  if case == "odd_size":
    (tmp_path / "bad.bin").write_bytes(b"\0" * 11)
  elif case == "out_of_range":
    write_raw(tmp_path / "bad.bin", [1, 2, 3, 4, 5, 300, 6])
  elif case == "no_dtype":
    write_raw(tmp_path / "bad.bin", [1, 2, 3])
    dtype = ""
  else:
    np.save(tmp_path / "bad.npy", np.arange(10, dtype=np.uint32))
  cfg = model_tiny.get_config()
  cfg.data.update(source="tokens", token_files=str(tmp_path / "*"), token_dtype=dtype)
  with pytest.raises(ValueError, match=message):
    load_splits(cfg.data, tokenizers.ByteTokenizer(), 384, 8)


def test_bad_token_dirs_and_vocabularies_are_refused(bpe_dir, bpe_path, tmp_path):
  tok = tokenizers.load(bpe_path)
  with pytest.raises(ValueError, match=r"config\.data\.token_dir=.*no metadata\.json"):
    token_data.from_token_dir(str(tmp_path), tok, 384)
  with pytest.raises(ValueError, match=r"config\.data\.tokenizer='bytes' is invalid: .* was "
                                       r"prepared with another tokenizer"):
    token_data.from_token_dir(bpe_dir, tokenizers.ByteTokenizer(), 384)
  with pytest.raises(ValueError, match=rf"config\.model\.vocab_size=280 is invalid: .* "
                                       rf"{tok.vocab_size}-token vocabulary"):
    token_data.from_token_dir(bpe_dir, tok, 280)
  cfg = tokens_config(bpe_path, bpe_dir)
  cfg.model.vocab_size = 280
  with pytest.raises(ValueError, match=rf"config\.model\.vocab_size=280 is invalid: must be >= "
                                       rf"{tok.vocab_size}.*\(e\.g\. 384, .* or 'auto'"):
    validate_config(cfg, tok.vocab_size)
  cfg = tokens_config(bpe_path, bpe_dir)
  cfg.data.source = "stdlib"
  with pytest.raises(ValueError, match=r"config\.data\.tokenizer=.* reads raw bytes"):
    validate_config(cfg, tok.vocab_size)


def test_size_configs_need_a_tokenizer():
  cfg = model_1_2b.get_config()
  with pytest.raises(ValueError, match=r"config\.data\.tokenizer='' is invalid: this config "
                                       r"needs a real tokenizer"):
    tokenizers.from_config(cfg.data)  # loaded before validation, which takes its vocabulary


def independent_bits_per_byte(model, batches, eos_id, nbytes_of):
  """float64 log-softmax in numpy; bytes counted from the decoded text of each target."""
  nats = nbytes = 0.0
  tokens = 0
  forward = nnx.jit(lambda m, x: m(x))
  for b in batches:
    logits = np.asarray(forward(model, b["inputs"]), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    t = np.asarray(b["targets"])
    nats -= np.take_along_axis(logp, t[..., None], -1).sum()
    tokens += t.size
    nbytes += sum(nbytes_of(int(i)) for i in t.ravel() if i != eos_id)
  return nats / tokens, nats / math.log(2) / nbytes


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_bits_per_byte_is_exact(kind, bpe_path, bpe_dir, bytes_dir):
  if kind == "bytes":
    cfg = tokens_config("bytes", bytes_dir)
    tok = tokenizers.ByteTokenizer()
    nbytes_of = lambda i: 1
  else:
    cfg = tokens_config(bpe_path, bpe_dir)
    tok = tokenizers.load(bpe_path)
    nbytes_of = lambda i: len(tok.tok.decode([i]).encode())  # ASCII corpus: whole characters
  cfg.train.update(seq_len=32, batch_size=4)
  splits = load_splits(cfg.data, tok, cfg.model.vocab_size, 32)
  batches = val_batches(splits.val, 32, 4, 3)
  mesh, rules = sharding.make_mesh(cfg.mesh), mesh_rules(cfg.mesh)
  graphdef, state = create_state(cfg, mesh)
  got = validation.Validator(graphdef, tok.token_bytes(), batches, mesh, rules)(state)
  eos = sum(int((b["targets"] == tok.eos_id).sum()) for b in batches)
  assert eos > 0  # EOS targets are scored and count 0 bytes
  loss, bpb = independent_bits_per_byte(nnx.merge(graphdef, state)[0], batches, tok.eos_id,
                                        nbytes_of)
  np.testing.assert_allclose(got["val_loss"], loss, rtol=1e-5)
  np.testing.assert_allclose(got["val_bits_per_byte"], bpb, rtol=1e-5)


@pytest.mark.integration
def test_training_on_bpe_shards_lowers_the_loss(bpe_path, bpe_dir, tmp_path):
  summary = train_and_evaluate(tokens_config(bpe_path, bpe_dir), str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  loss = {r["step"]: r["loss"] for r in rows if "loss" in r}
  assert np.mean([loss[11], loss[12]]) < np.mean([loss[1], loss[2]]) - 0.5
  val = [r for r in rows if "val_bits_per_byte" in r]
  assert val and "val_loss" in val[-1] and val[-1]["step"] == 12
  assert 0 < summary["val_bits_per_byte"] < summary["val_loss"] / math.log(2)  # > 1 byte/token
  assert open(tmp_path / "tokenizer.json").read() == open(bpe_path).read()
  gen = commands.phd("phd-generate", f"--workdir={tmp_path}", "--max_new_tokens=6",
                     "--prompt=def self")
  assert "checkpoint step 12" in gen.stdout
