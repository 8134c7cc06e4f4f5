"""phd-tokenizer: train a byte-level BPE with HF `tokenizers` (phd_jax/data/bpe.py).

  phd-tokenizer --input='corpus/**/*.txt' --vocab_size=4096 --out=bpe.json

--input globs and --out may be gs:// / s3:// URLs as well as local paths.
"""
from __future__ import annotations

from absl import flags

from phd_jax.cli import common
from phd_jax.data.bpe import train_from_globs
from phd_jax.data.tokenizers import HFTokenizer

_INPUT = flags.DEFINE_string("input", None, "Glob(s) of text files, comma separated.")
_VOCAB = flags.DEFINE_integer("vocab_size", 8192, "Target vocabulary size (EOS included).")
_OUT = flags.DEFINE_string("out", "tokenizer.json", "Output tokenizer.json path.")


def _main(argv: list[str]) -> None:
  if argv[1:] not in ([], ["train"]):  # `train`: the subcommand of `python -m phd_jax.tokenizer`
    raise ValueError(f"unexpected arguments {argv[1:]}; usage: phd-tokenizer --input=GLOB "
                     "--vocab_size=N --out=PATH.json")
  n = train_from_globs(_INPUT.value, _VOCAB.value, _OUT.value)
  print(f"wrote {_OUT.value}: {HFTokenizer(_OUT.value).vocab_size} tokens from {n} files")


def main() -> None:
  common.launch(_main, required=["input"])


if __name__ == "__main__":
  main()
