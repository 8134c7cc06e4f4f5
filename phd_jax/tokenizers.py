"""Tokenizers behind one interface: the byte tokenizer (default, no files), and more to come.

Everything that turns text into ids (training data, sampling, evaluation) goes through
`Tokenizer`, so a run trained with one tokenizer is sampled and evaluated with the same one.
`token_bytes` gives the UTF-8 byte length of every id: bits/byte is exact for any tokenizer.
"""
from __future__ import annotations

import abc
from typing import Sequence

import ml_collections
import numpy as np


class Tokenizer(abc.ABC):
  """Text <-> ids. `vocab_size` counts every id the tokenizer can emit (EOS included)."""

  name: str
  vocab_size: int
  eos_id: int

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`, with no EOS appended."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; ids outside the vocabulary and EOS are skipped."""

  @abc.abstractmethod
  def token_bytes(self) -> np.ndarray:
    """[vocab_size] int64: UTF-8 bytes each id stands for (special tokens, EOS included: 0)."""


class ByteTokenizer(Tokenizer):
  """Ids 0..255 are the bytes of the UTF-8 text; 256 is EOS (ends every document)."""

  name = "bytes"
  vocab_size = 257
  eos_id = 256

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in np.asarray(ids).ravel()]
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

  def token_bytes(self) -> np.ndarray:
    out = np.ones(self.vocab_size, np.int64)
    out[self.eos_id] = 0
    return out


def from_config(data_cfg: ml_collections.ConfigDict) -> Tokenizer:
  """The tokenizer `config.data.tokenizer` names ("bytes" for now)."""
  name = data_cfg.get("tokenizer", "bytes")
  if name == "bytes":
    return ByteTokenizer()
  raise ValueError(f"config.data.tokenizer={name!r} is invalid: allowed: 'bytes'")


def for_run(workdir: str, cfg: ml_collections.ConfigDict) -> Tokenizer:
  """The tokenizer a run in `workdir` was trained with (its saved config `cfg`)."""
  del workdir  # the byte tokenizer needs no files; file-backed tokenizers are saved in the run
  return from_config(cfg.data)
