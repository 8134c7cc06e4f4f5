"""Training data, as fixed-length windows that grain shuffles, slices per host and batches.

Sources (`config.data.source`): `stdlib` and `text_files` are bytes of text files, no download
(phd_jax/data/text.py); `tokens` is pretokenized data (prepare's shards or token files made
elsewhere, phd_jax/data/tokens.py). Both become sources of windows here.
"""
from __future__ import annotations

from typing import NamedTuple

import grain
import ml_collections
import numpy as np

from phd_jax.data import sampling, text, tokens
from phd_jax.data.tokenizers import Tokenizer


class Windows(grain.sources.RandomAccessDataSource):
  """Non-overlapping windows of seq_len + 1 tokens: inputs and next-token targets."""

  def __init__(self, tokens: np.ndarray, seq_len: int):
    self.tokens, self.seq_len = tokens, seq_len
    self.count = (tokens.size - 1) // seq_len
    if self.count < 1:
      raise ValueError(f"config.train.seq_len={seq_len} is longer than the corpus split "
                       f"({tokens.size} tokens)")

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    w = self.tokens[i * self.seq_len:(i + 1) * self.seq_len + 1].astype(np.int32)
    return {"inputs": w[:-1], "targets": w[1:]}


class Splits(NamedTuple):
  train: grain.sources.RandomAccessDataSource  # windows of seq_len + 1 tokens
  val: grain.sources.RandomAccessDataSource
  description: str


def load_splits(d: ml_collections.ConfigDict, tok: Tokenizer, model_vocab: int,
                seq_len: int) -> Splits:
  """The train and validation windows of `config.data`, checked before anything trains."""
  if d.source == "tokens":
    s = tokens.load(d, tok, model_vocab)
    return Splits(tokens.TokenWindows(s.train, seq_len, "train"),
                  tokens.TokenWindows(s.val, seq_len, "val"), s.description)
  corpus = text.load_corpus(d)
  return Splits(Windows(corpus.train, seq_len), Windows(corpus.val, seq_len), corpus.describe())


def _windows(tokens, seq_len: int) -> grain.sources.RandomAccessDataSource:
  return Windows(tokens, seq_len) if isinstance(tokens, np.ndarray) else tokens


Source = np.ndarray | grain.sources.RandomAccessDataSource


def train_dataset(tokens: Source, seq_len: int, batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> sampling.MixtureIterator:
  """Shuffled, endlessly repeated batches of one source: a mixture of one (sampling.py).

  `tokens` is a token array or a source of windows (Windows, tokens.TokenWindows); seq_len
  only applies to an array. `batch_size` is per host; host h reads rows [h * batch_size,
  (h + 1) * batch_size) of each global batch. The iterator's state (a position) is
  checkpointed with the model.
  """
  w = _windows(tokens, seq_len)
  plan = sampling.Plan(["data"], [len(w)], [1.0], (), batch_size * process_count, seed)
  return sampling.MixtureIterator(plan, [w], process_index, process_count)


def val_batches(tokens: Source, seq_len: int, batch_size: int,
                max_batches: int) -> list[dict[str, np.ndarray]]:
  """Windows spread evenly over the whole validation split, the same at every evaluation.

  Evenly spaced rather than the first ones: the first few windows all lie in one file, and a
  single file's bits/byte can sit far from the split's.
  """
  windows = _windows(tokens, seq_len)
  n = min(max_batches, len(windows) // batch_size)
  if n == 0:
    raise ValueError(f"config.train.batch_size={batch_size}: the validation split has only "
                     f"{len(windows)} windows of seq_len={seq_len}")
  picks = np.linspace(0, len(windows) - 1, n * batch_size).round().astype(int)
  rows = [windows[int(i)] for i in picks]
  return [{k: np.stack([r[k] for r in rows[b * batch_size:(b + 1) * batch_size]])
           for k in rows[0]} for b in range(n)]
