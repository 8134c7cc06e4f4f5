"""phd-prepare: tokenize a corpus once into flat token shards (phd_jax/data/prepare.py).

  phd-prepare --input='corpus/*.jsonl' --tokenizer=bpe.json --out=data/tok
  phd-prepare --hf_dataset=NAME [--hf_config=C] [--split=train] --tokenizer=T --out=D
  phd-prepare --input='gs://corpus/*.jsonl' --tokenizer=gs://tok/bpe.json --out=gs://data/tok

Every path (--input, --tokenizer, --out) may be local or a gs:// / s3:// URL.
"""
from __future__ import annotations

import os

from absl import flags

from phd_jax.cli import common
from phd_jax.data.prepare import prepare, report

_INPUT = flags.DEFINE_string("input", "", "Glob(s), comma separated, local or gs:// / s3://: "
                             ".txt (one document per file), .jsonl/.json (one per line), "
                             ".parquet.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "bytes",
                                 "'bytes', a tokenizer.json or a SentencePiece .model.")
_OUT = flags.DEFINE_string("out", None, "Output directory: a local path or a gs:// / s3:// URL.")
_TEXT_FIELD = flags.DEFINE_string("text_field", "text",
                                  "JSON field / parquet column holding the text.")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.01,
                                   "Share of documents held out (by document hash).")
_WORKERS = flags.DEFINE_integer("num_workers", max(1, (os.cpu_count() or 2) - 1),
                                "Worker processes.")
_SHARD_MB = flags.DEFINE_integer("shard_mb", 256,
                                 "Input MiB per unit (one train + one val shard each).")
_HF_DATASET = flags.DEFINE_string("hf_dataset", "",
                                  "A `datasets` name or local folder, instead of --input.")
_HF_CONFIG = flags.DEFINE_string("hf_config", None, "The dataset's config name.")
_SPLIT = flags.DEFINE_string("split", "train", "The dataset's split.")
_ROWS = flags.DEFINE_integer("rows_per_shard", 100_000, "Dataset rows per unit (--hf_dataset).")


def _main(argv: list[str]) -> None:
  del argv
  meta = prepare(input=_INPUT.value, tokenizer=_TOKENIZER.value, out=_OUT.value,
                 text_field=_TEXT_FIELD.value, val_fraction=_VAL_FRACTION.value,
                 num_workers=_WORKERS.value, shard_bytes=_SHARD_MB.value << 20,
                 hf_dataset=_HF_DATASET.value, hf_config=_HF_CONFIG.value, split=_SPLIT.value,
                 rows_per_shard=_ROWS.value)
  print(report(meta, _OUT.value))


def main() -> None:
  common.launch(_main, required=["out"])  # documents.InputError is a ValueError: one line too


if __name__ == "__main__":
  main()
