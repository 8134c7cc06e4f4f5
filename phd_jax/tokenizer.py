"""Trains a byte-level BPE with HF `tokenizers`:

  python -m phd_jax.tokenizer train --input='corpus/**/*.txt' --vocab_size=4096 --out=bpe.json

Byte-level (GPT-2/OLMo2 style): every byte is in the base alphabet, so any text encodes with no
unknown token, and each token's UTF-8 length is exact (phd_jax.tokenizers.HFTokenizer). The one
special token, <|endoftext|>, ends every document in prepared data.
"""
from __future__ import annotations

import glob
import os
import sys

from absl import app, flags

EOS = "<|endoftext|>"


def _texts(files: list[str]):
  for f in files:
    with open(f, "rb") as fh:
      yield fh.read().decode("utf-8", errors="replace")


def train_bpe(files: list[str], vocab_size: int, out: str, min_frequency: int = 2) -> None:
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                special_tokens=[EOS], show_progress=sys.stderr.isatty(),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_texts(files), trainer, length=len(files))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tok.save(out + ".tmp")
  os.replace(out + ".tmp", out)


def main(argv: list[str]) -> None:
  if argv[1:] != ["train"]:
    sys.exit("usage: python -m phd_jax.tokenizer train --input=GLOB --vocab_size=N --out=PATH.json")
  f = flags.FLAGS
  files = sorted(p for g in (f.input or "").split(",") for p in glob.glob(g.strip(), recursive=True)
                 if os.path.isfile(p))
  if not files:
    sys.exit(f"error: --input={f.input!r} matches no files")
  if f.vocab_size < 257:
    sys.exit(f"error: --vocab_size={f.vocab_size} is invalid: must be >= 257 (256 bytes + EOS)")
  if not f.out.endswith(".json"):
    sys.exit(f"error: --out={f.out!r} is invalid: must end in .json")
  train_bpe(files, f.vocab_size, f.out)
  from phd_jax.tokenizers import HFTokenizer
  print(f"wrote {f.out}: {HFTokenizer(f.out).vocab_size} tokens from {len(files)} files")


if __name__ == "__main__":
  flags.DEFINE_string("input", None, "Glob(s) of text files, comma separated.")
  flags.DEFINE_integer("vocab_size", 8192, "Target vocabulary size (special token included).")
  flags.DEFINE_string("out", "tokenizer.json", "Output tokenizer.json path.")
  app.run(main)
