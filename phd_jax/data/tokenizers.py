"""Tokenizers behind one interface: bytes (the default, no files), HF tokenizer.json, SentencePiece.

Everything that turns text into ids (training data, sampling, evaluation) goes through
`Tokenizer`, so a run trained with one tokenizer is sampled and evaluated with the same one: the
tokenizer file is copied into the run's workdir at training start (`save_to_run`) and `for_run`
loads that copy. `token_bytes` gives the UTF-8 byte length of every id: bits/byte is exact for
any tokenizer.

`config.data.tokenizer` is "bytes" or a path: `*.json` (a Hugging Face `tokenizers` file, e.g.
OLMo2's tokenizer.json) or `*.model` (SentencePiece). The path, and the workdir the copy goes to,
may be `gs://` / `s3://` URLs (phd_jax.files): the file is read into memory, never into a local
copy, and its fingerprint (a hash of its bytes) is the same wherever it lies.
"""
from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence

import ml_collections
import numpy as np

from phd_jax import files as fs

# Special tokens taken as end-of-document, in order of preference (OLMo2/GPT: <|endoftext|>).
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]")
RUN_FILES = {"hf": "tokenizer.json", "sentencepiece": "tokenizer.model"}


class Tokenizer(abc.ABC):
  """Text <-> ids. `vocab_size` counts every id the tokenizer can emit (EOS included)."""

  name: str
  vocab_size: int
  eos_id: int
  path: str | None = None  # the file it was loaded from (None: needs none)

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`, with no EOS appended."""

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; ids outside the vocabulary and EOS are skipped."""

  @abc.abstractmethod
  def token_bytes(self) -> np.ndarray:
    """[vocab_size] int64: UTF-8 bytes each id stands for (special tokens, EOS included: 0)."""

  def fingerprint(self) -> str:
    """Identifies the tokenizer's content (not its path): prepared data records it."""
    if self.path is None:
      return self.name
    return hashlib.sha256(fs.read_bytes(self.path)).hexdigest()[:16]


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


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizers` file (tokenizer.json), e.g. OLMo2's ~100k byte-level BPE."""

  kind = "hf"

  def __init__(self, path: str):
    import tokenizers  # local: only runs with a tokenizer file pay for the import
    self.path, self.name = path, fs.basename(path)
    self.tok = (tokenizers.Tokenizer.from_str(fs.read_text(path)) if fs.is_url(path)
                else tokenizers.Tokenizer.from_file(path))
    self._special = {i for i, t in self.tok.get_added_tokens_decoder().items() if t.special}
    ids = [self.tok.token_to_id(n) for n in EOS_NAMES]
    ids = [i for i in ids if i is not None]
    if not ids:
      raise ValueError(f"tokenizer {path} has no end-of-document token; expected one of "
                       f"{EOS_NAMES} among its special tokens")
    self.eos_id = ids[0]
    self.vocab_size = max(self.tok.get_vocab_size(with_added_tokens=True),
                          max(self.tok.get_added_tokens_decoder(), default=0) + 1)

  def encode(self, text: str) -> list[int]:
    return self.tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in np.asarray(ids).ravel()]
    return self.tok.decode([i for i in ids if 0 <= i < self.vocab_size and i != self.eos_id],
                           skip_special_tokens=True)

  def token_bytes(self) -> np.ndarray:
    """Byte-level vocabularies spell each byte as one character of a fixed 256-letter alphabet,
    so a token's length in characters is its length in bytes; others decode id by id."""
    import tokenizers
    alphabet = set(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    byte_level = isinstance(self.tok.decoder, tokenizers.decoders.ByteLevel)
    out = np.zeros(self.vocab_size, np.int64)
    for i in range(self.vocab_size):
      piece = self.tok.id_to_token(i)
      if piece is None or i in self._special:
        continue
      if byte_level and set(piece) <= alphabet:
        out[i] = len(piece)
      else:
        out[i] = len(self.tok.decode([i]).encode("utf-8"))
    return out


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece `.model`. Its word-start marker '▁' counts as the space it stands for."""

  kind = "sentencepiece"

  def __init__(self, path: str):
    import sentencepiece
    self.path, self.name = path, fs.basename(path)
    self.sp = (sentencepiece.SentencePieceProcessor(model_proto=fs.read_bytes(path))
               if fs.is_url(path) else sentencepiece.SentencePieceProcessor(model_file=path))
    self.vocab_size = self.sp.get_piece_size()
    self.eos_id = self.sp.eos_id()
    if self.eos_id < 0:
      raise ValueError(f"tokenizer {path} has no end-of-document token (its eos_id is -1); "
                       "train it with --eos_id set")

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self.sp.encode(list(texts))

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in np.asarray(ids).ravel()]
    return self.sp.decode([i for i in ids if 0 <= i < self.vocab_size and i != self.eos_id])

  def token_bytes(self) -> np.ndarray:
    out = np.zeros(self.vocab_size, np.int64)
    for i in range(self.vocab_size):
      if self.sp.is_control(i) or self.sp.is_unknown(i):
        continue
      if self.sp.is_byte(i):
        out[i] = 1
      else:
        out[i] = len(self.sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
    return out


def load(spec: str) -> Tokenizer:
  """'bytes', or a tokenizer file: *.json (HF tokenizers) or *.model (SentencePiece)."""
  if spec == "bytes":
    return ByteTokenizer()
  if not spec:
    raise ValueError("config.data.tokenizer='' is invalid: this config needs a real tokenizer: "
                     "--config.data.tokenizer=PATH to a tokenizer.json (e.g. OLMo2's, see the "
                     "docs/data.md) or a SentencePiece .model")
  fs.check_access(spec, "config.data.tokenizer")
  if not fs.isfile(spec):
    raise ValueError(f"config.data.tokenizer={spec!r} is invalid: no such file (allowed: "
                     "'bytes', a tokenizer.json, a SentencePiece .model)")
  if spec.endswith(".json"):
    return HFTokenizer(spec)
  if spec.endswith(".model"):
    return SentencePieceTokenizer(spec)
  raise ValueError(f"config.data.tokenizer={spec!r} is invalid: allowed: 'bytes', a path ending "
                   "in .json (HF tokenizers) or .model (SentencePiece)")


def from_config(data_cfg: ml_collections.ConfigDict) -> Tokenizer:
  """The tokenizer `config.data.tokenizer` names."""
  return load(data_cfg.tokenizer)


def save_to_run(tok: Tokenizer, workdir: str) -> None:
  """Copies the tokenizer file into the run (atomically), so the run carries its own tokenizer."""
  if tok.path is None:
    return
  fs.copy_file(tok.path, fs.join(workdir, RUN_FILES[tok.kind]))


def for_run(workdir: str, cfg: ml_collections.ConfigDict) -> Tokenizer:
  """The tokenizer a run in `workdir` was trained with (its saved config `cfg`): the copy in the
  workdir when the run has one, so runs move between machines with their tokenizer."""
  spec = cfg.data.tokenizer
  if spec != "bytes":
    for kind, fname in RUN_FILES.items():
      copy = fs.join(workdir, fname)
      if fs.isfile(copy):
        return HFTokenizer(copy) if kind == "hf" else SentencePieceTokenizer(copy)
  return load(spec)
