"""phd-data: the training windows a config yields from a given step, i.e. what the model reads.

  phd-data --config=configs/mixture.py --step=1 --windows=8
  phd-data --config=configs/mixture.py --step=500 --windows=64 --json

For each window, in the order of the global batch (row 0 of --step first, then on into the next
steps): its source, the source's window and epoch, the file and first token it was read from, and
its text (seq_len + 1 tokens: the inputs and the last target, decoded). --json: one JSON object
per line with the token ids instead of the text. The data is built and read exactly as phd-train
does (phd_jax/data/mixture.py, the same iterator), on any machine: every host of a run reads its
own rows of these global batches.
"""
from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from phd_jax.cli import common
from phd_jax.config.validate import padded_vocab
from phd_jax.data import mixture, tokenizers

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The training config (a get_config() module, e.g. configs/mixture.py), "
    "with any --config.* overrides phd-train would get.")
_STEP = flags.DEFINE_integer("step", 1, "The first training step shown (from 1).")
_WINDOWS = flags.DEFINE_integer("windows", 0, "Windows shown (0: one global batch).")
_JSON = flags.DEFINE_bool("json", False, "One JSON object per line, with token ids.")


def windows_from(cfg, step: int, count: int) -> list[dict]:
  """`count` windows from the start of training step `step`: where each comes from and its ids
  (seq_len + 1 tokens), read through the training iterator."""
  t = cfg.train
  tok = tokenizers.from_config(cfg.data)
  vocab = cfg.model.vocab_size
  vocab = padded_vocab(tok.vocab_size) if vocab == "auto" else vocab
  data = mixture.load(cfg.data, tok, vocab, t.seq_len, t.batch_size, t.val_batches)
  it = data.train_iterator(t.batch_size, cfg.data.seed)  # one host: whole global batches
  it.seek(step - 1)
  out = []
  while len(out) < count:
    index = it.batch  # the global batch next() reads: that of step index + 1
    batch = next(it)
    for r, row in enumerate(it.rows(index)):
      ids = [*batch["inputs"][r].tolist(), int(batch["targets"][r, -1])]
      out.append({"step": index + 1, **row, "ids": ids})
  return out[:count]


def _main(argv: list[str]) -> None:
  del argv
  cfg = _CONFIG.value
  if _STEP.value < 1:
    raise ValueError(f"--step={_STEP.value} is invalid: training steps count from 1")
  if _WINDOWS.value < 0:
    raise ValueError(f"--windows={_WINDOWS.value} is invalid: expected >= 0")
  count = _WINDOWS.value or cfg.train.batch_size
  tok = None if _JSON.value else tokenizers.from_config(cfg.data)
  for w in windows_from(cfg, _STEP.value, count):
    if tok is None:
      print(json.dumps(w))
      continue
    where = f"{w['file']} tokens {w['offset']}..{w['offset'] + len(w['ids'])}" if w["file"] \
        else f"tokens {w['offset']}..{w['offset'] + len(w['ids'])} of the split"
    print(f"=== step {w['step']} row {w['row']} | source {w['source']} | window {w['window']}, "
          f"epoch {w['epoch']} | {where}")
    print(tok.decode(w["ids"]))


def main() -> None:
  common.launch(_main, required=["config"], errors=(ValueError, OSError))


if __name__ == "__main__":
  main()
