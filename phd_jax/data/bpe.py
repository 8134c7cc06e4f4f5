"""Byte-level BPE training with HF `tokenizers` (the phd-tokenizer command).

Byte-level (GPT-2/OLMo2 style): every byte is in the base alphabet, so any text encodes with no
unknown token, and each token's UTF-8 length is exact (phd_jax.data.tokenizers.HFTokenizer). The
one special token, <|endoftext|>, ends every document in prepared data.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator

from phd_jax import files as fs

EOS = "<|endoftext|>"
MIN_VOCAB = 257  # 256 bytes + EOS
MIN_FREQUENCY = 2  # a pair seen once is not merged


def _texts(paths: list[str]) -> Iterator[str]:
  for path in paths:
    yield fs.read_bytes(path).decode("utf-8", errors="replace")


def train_bpe(paths: list[str], vocab_size: int, out: str) -> None:
  """Trains on the text files `paths` and writes a tokenizer.json to `out` (atomically)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=MIN_FREQUENCY,
                                special_tokens=[EOS], show_progress=sys.stderr.isatty(),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_texts(paths), trainer, length=len(paths))
  with fs.atomic_path(out) as tmp:
    tok.save(tmp)


def train_from_globs(patterns: str, vocab_size: int, out: str) -> int:
  """Checks the arguments (one clear ValueError each), trains; returns the number of files."""
  paths = fs.expand(patterns or "")
  if not paths:
    raise ValueError(f"--input={patterns!r} matches no files")
  if vocab_size < MIN_VOCAB:
    raise ValueError(f"--vocab_size={vocab_size} is invalid: must be >= {MIN_VOCAB} "
                     "(256 bytes + EOS)")
  if not out.endswith(".json"):
    raise ValueError(f"--out={out!r} is invalid: must end in .json")
  train_bpe(paths, vocab_size, out)
  return len(paths)
