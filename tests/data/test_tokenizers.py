"""Tokenizers: round trips, exact byte lengths per id, the run's own copy, clear refusals."""
import os

import ml_collections
import pytest

from phd_jax.data import tokenizers
from tests import commands

TEXT = "def héllo(x):\n  return x * 2  # ünïcode €, 漢字 and 🙂\n"


def test_bytes_tokenizer():
  tok = tokenizers.ByteTokenizer()
  ids = tok.encode(TEXT)
  assert tok.decode(ids + [tok.eos_id]) == TEXT
  assert tok.token_bytes()[ids].sum() == len(TEXT.encode()) and tok.token_bytes()[256] == 0


def test_bpe_round_trip_and_exact_byte_lengths(bpe_path):
  tok = tokenizers.load(bpe_path)
  assert isinstance(tok, tokenizers.HFTokenizer) and 257 < tok.vocab_size <= 320
  assert tok.eos_id == tok.tok.token_to_id("<|endoftext|>")
  ids = tok.encode(TEXT)
  assert len(ids) < len(TEXT.encode())  # merges learned from the corpus apply
  assert tok.decode(ids + [tok.eos_id]) == TEXT
  table = tok.token_bytes()
  assert table[tok.eos_id] == 0 and table.shape == (tok.vocab_size,)
  assert table[ids].sum() == len(TEXT.encode())  # multi-byte characters split over tokens too
  for i in range(1, tok.vocab_size):  # independent: the bytes each (ASCII/whole) token decodes to
    piece = tok.tok.decode([i])
    if "\ufffd" not in piece:
      assert table[i] == len(piece.encode()), (i, piece)


def test_sentencepiece(tmp_path):
  import sentencepiece as spm
  lines = [f"def function_{i}(value): return value + {i}" for i in range(300)]
  spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "sp"),
                                 vocab_size=400, model_type="bpe", byte_fallback=True,
                                 minloglevel=2)
  tok = tokenizers.load(str(tmp_path / "sp.model"))
  text = "def function_7(value): return value * 3 é"
  ids = tok.encode(text)
  assert tok.decode(ids + [tok.eos_id]) == text
  # The word-start marker of the first word stands for SentencePiece's dummy-prefix space.
  assert tok.token_bytes()[ids].sum() == len((" " + text).encode())
  assert tok.token_bytes()[tok.eos_id] == 0


def test_the_run_keeps_its_own_copy(bpe_path, tmp_path):
  src = tmp_path / "elsewhere.json"
  src.write_bytes(open(bpe_path, "rb").read())
  cfg = ml_collections.ConfigDict({"data": {"tokenizer": str(src)}})
  tokenizers.save_to_run(tokenizers.from_config(cfg.data), str(tmp_path / "run"))
  src.unlink()  # the original is gone, e.g. the run moved to another machine
  tok = tokenizers.for_run(str(tmp_path / "run"), cfg)
  assert tok.path == str(tmp_path / "run" / "tokenizer.json")
  assert tok.vocab_size == tokenizers.load(bpe_path).vocab_size
  bytes_cfg = ml_collections.ConfigDict({"data": {"tokenizer": "bytes"}})
  assert isinstance(tokenizers.for_run(str(tmp_path / "run"), bytes_cfg),
                    tokenizers.ByteTokenizer)


@pytest.fixture(autouse=True)
def _run_dir(tmp_path):
  os.makedirs(tmp_path / "run", exist_ok=True)


@pytest.mark.parametrize("spec, message", [
    ("", "needs a real tokenizer"),
    ("/nowhere/tokenizer.json", "no such file"),
    (__file__, r"allowed: 'bytes', a path ending in \.json"),
])
def test_bad_tokenizer_is_refused(spec, message):
  with pytest.raises(ValueError, match=rf"config\.data\.tokenizer=.*{message}"):
    tokenizers.load(spec)


@pytest.mark.integration
def test_train_command(corpus_glob, tmp_path):
  args = ["train", "--vocab_size=300", f"--out={tmp_path / 'tok.json'}"]
  commands.phd("phd-tokenizer", *args, f"--input={corpus_glob}", timeout=120)
  assert 257 < tokenizers.load(str(tmp_path / "tok.json")).vocab_size <= 300
  bad = commands.phd("phd-tokenizer", *args, f"--input={tmp_path / 'none' / '*.txt'}",
                     timeout=120, expect=None)
  assert bad.returncode != 0 and "matches no files" in bad.stderr
