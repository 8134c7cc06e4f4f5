"""Pretokenized training data: flat token files read as random-access windows.

`config.data.source="tokens"` with either
  - `data.token_dir`: a directory written by phd-prepare (metadata.json names its shards,
    dtype and tokenizer), or
  - `data.token_files` (+ `data.token_dtype` for raw files): token files made elsewhere: raw
    little-endian `.bin` arrays or `.npy` arrays (OLMo's pretokenized memmaps, for instance);
    files are split into train/val by a hash of their names, like data.source=text_files.
Everything is checked before training: the tokenizer's vocab against the model's, each file's size
against its dtype, and the ids against the tokenizer's vocab.

Every path may be local or a `gs://` / `s3://` URL (phd_jax.files). Local shards are memory-mapped.
Shards in a bucket are never downloaded whole and have no local cache: each window is one ranged
read (a GET of its seq_len + 1 tokens' bytes), a `.npy` header is parsed from the first bytes of
the object, and checking ids reads the object in ranged chunks. A corpus far larger than the
local disk trains straight from the bucket; the price is one request per window.
"""
from __future__ import annotations

import io
import json
from typing import NamedTuple

import grain
import ml_collections
import numpy as np

from phd_jax import files as fs
from phd_jax.data.tokenizers import Tokenizer

RAW_DTYPES = ("uint16", "uint32", "int32", "int64")
SCAN_CHUNK = 1 << 24  # tokens per read while checking ids
NPY_HEAD = 4096  # bytes first read of a .npy in a bucket: its whole header, nearly always


class Shard(NamedTuple):
  path: str
  dtype: str
  offset: int  # bytes before the first token (.npy header)
  tokens: int


class TokenWindows(grain.sources.RandomAccessDataSource):
  """Windows of seq_len + 1 tokens over a list of shards; no window straddles two shards.

  Local shards are memory-mapped lazily (memmaps are not pickled); a shard in a bucket is read
  with one ranged read per window and no handle is kept, so the source stays a few strings and
  integers: cheap to hand to grain workers.
  """

  def __init__(self, shards: list[Shard], seq_len: int, name: str = "tokens"):
    self.shards, self.seq_len = [s for s in shards if s.tokens > seq_len], seq_len
    counts = [(s.tokens - 1) // seq_len for s in self.shards]
    self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [num_shards + 1]
    self._maps: list | None = None  # per shard: a memmap, or None for a URL (ranged reads)
    if len(self) < 1:
      raise ValueError(f"config.train.seq_len={seq_len} is longer than every {name} shard "
                       f"(largest: {max((s.tokens for s in shards), default=0)} tokens)")

  def __len__(self) -> int:
    return int(self.starts[-1])

  def locate(self, i: int) -> tuple[int, int]:
    """(shard, first token) of window i."""
    k = int(np.searchsorted(self.starts, i, side="right")) - 1
    return k, (int(i) - int(self.starts[k])) * self.seq_len

  def __getstate__(self):
    return {**self.__dict__, "_maps": None}

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    if self._maps is None:
      self._maps = [None if fs.is_url(s.path) else _memmap(s) for s in self.shards]
    k, at = self.locate(i)
    m = self._maps[k]
    w = np.asarray(read_tokens(self.shards[k], at, at + self.seq_len + 1) if m is None
                   else m[at:at + self.seq_len + 1], dtype=np.int32)
    return {"inputs": w[:-1], "targets": w[1:]}


class TokenSplits(NamedTuple):
  train: list[Shard]
  val: list[Shard]
  description: str


def _memmap(s: Shard) -> np.memmap:
  return np.memmap(s.path, _little(s.dtype), "r", s.offset, (s.tokens,))


def _little(dtype: str) -> np.dtype:
  return np.dtype(dtype).newbyteorder("<")


def read_tokens(s: Shard, start: int, stop: int) -> np.ndarray:
  """Tokens [start, stop) of a shard with one ranged read (a seek locally, a GET from a bucket);
  a file that changed since it was checked is an error, not a short window."""
  item = np.dtype(s.dtype).itemsize
  raw = fs.read_range(s.path, s.offset + start * item, s.offset + stop * item)
  if len(raw) != (stop - start) * item:
    raise ValueError(f"token file {s.path}: {len(raw)} bytes where tokens [{start}, {stop}) "
                     f"should be {(stop - start) * item}; it changed since it was checked")
  return np.frombuffer(raw, _little(s.dtype))


def _raw_shard(path: str, dtype: str, field: str) -> Shard:
  size, item = fs.size(path), np.dtype(dtype).itemsize
  if size % item:
    raise ValueError(f"token file {path}: {size} bytes is not a multiple of {item} "
                     f"({field}={dtype!r}); a truncated file or the wrong dtype")
  return Shard(path, dtype, 0, size // item)


def _has_npy_header(path: str) -> bool:
  """OLMo's `.npy` token files are headerless memmaps: only the magic string tells them apart."""
  return fs.read_range(path, 0, 6) == b"\x93NUMPY"


class _Npy(NamedTuple):  # what a .npy header says (np.load's memmap locally)
  ndim: int
  dtype: np.dtype
  offset: int
  size: int


def _npy_header(path: str) -> _Npy:
  """The header of a .npy object in a bucket, from ranged reads of its first bytes only."""
  head = fs.read_range(path, 0, NPY_HEAD)
  f = io.BytesIO(head)
  version = np.lib.format.read_magic(f)
  width = 2 if version == (1, 0) else 4  # the header length's bytes
  need = 6 + 2 + width + int.from_bytes(head[8:8 + width], "little")
  if need > len(head):
    f = io.BytesIO(head + fs.read_range(path, len(head), need))
    np.lib.format.read_magic(f)
  shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                     else np.lib.format.read_array_header_2_0)(f)
  count = int(np.prod(shape))
  if fs.size(path) < f.tell() + count * dtype.itemsize:
    raise ValueError(f"its header promises {count} {dtype} items, more than the file holds")
  return _Npy(len(shape), dtype, f.tell(), count)


def _npy_shard(path: str, dtype: str) -> Shard:
  try:
    arr = _npy_header(path) if fs.is_url(path) else np.load(path, mmap_mode="r")
  except ValueError as e:  # a truncated .npy: its header promises more than the file holds
    raise ValueError(f"token file {path}: not a whole .npy array ({e})") from None
  if arr.ndim != 1 or arr.dtype.name not in RAW_DTYPES:
    raise ValueError(f"token file {path}: a {arr.ndim}-d {arr.dtype} array; expected 1-d "
                     f"ids of a dtype in {RAW_DTYPES}")
  if dtype and dtype != arr.dtype.name:
    raise ValueError(f"config.data.token_dtype={dtype!r} is invalid: {path} holds "
                     f"{arr.dtype.name}")
  return Shard(path, arr.dtype.name, arr.offset, arr.size)


def check_ids(shards: list[Shard], vocab: int, what: str) -> None:
  """Refuses any id outside [0, vocab): one pass over the files, in chunks (ranged reads of a
  bucket's objects)."""
  for s in shards:
    data = None if fs.is_url(s.path) or not s.tokens else _memmap(s)
    for at in range(0, s.tokens, SCAN_CHUNK):
      stop = min(at + SCAN_CHUNK, s.tokens)
      chunk = read_tokens(s, at, stop) if data is None else data[at:stop]
      lo, hi = int(chunk.min()), int(chunk.max())
      if lo < 0 or hi >= vocab:
        bad = int(np.argmax((chunk < 0) | (chunk >= vocab)))
        raise ValueError(f"token file {s.path}: id {int(chunk[bad])} at position {at + bad} is "
                         f"outside the vocabulary [0, {vocab}) of {what}")


def from_token_dir(directory: str, tok: Tokenizer, model_vocab: int) -> TokenSplits:
  fs.check_access(directory, "config.data.token_dir")
  path = fs.join(directory, "metadata.json")
  if not fs.isfile(path):
    raise ValueError(f"config.data.token_dir={directory!r} is invalid: no metadata.json (not a "
                     "phd-prepare output, or its prepare did not finish: rerun it)")
  meta = json.loads(fs.read_text(path))
  t = meta["tokenizer"]
  if t["fingerprint"] != tok.fingerprint():
    raise ValueError(f"config.data.tokenizer={tok.path or tok.name!r} is invalid: "
                     f"{directory} was prepared with another tokenizer ({t['spec']}, "
                     f"fingerprint {t['fingerprint']}); use its copy "
                     f"{fs.join(directory, t['file'] or '')}")
  if t["vocab_size"] > model_vocab:
    raise ValueError(f"config.model.vocab_size={model_vocab} is invalid: {directory} holds ids "
                     f"of a {t['vocab_size']}-token vocabulary")
  out = {}
  for split in ("train", "val"):
    shards = []
    for entry in meta["shards"][split]:
      shard = _raw_shard(fs.join(directory, entry["file"]), meta["dtype"], "dtype")
      if shard.tokens != entry["tokens"]:
        raise ValueError(f"token file {shard.path}: {shard.tokens} tokens, metadata.json says "
                         f"{entry['tokens']}; rerun phd-prepare")
      if entry["max_id"] >= t["vocab_size"]:
        raise ValueError(f"token file {shard.path}: ids up to {entry['max_id']}, outside the "
                         f"tokenizer's vocabulary [0, {t['vocab_size']})")
      shards.append(shard)
    out[split] = shards
  tot = meta["totals"]
  return TokenSplits(out["train"], out["val"], (
      f"tokens {directory}: {tot['train']['documents']} train / {tot['val']['documents']} val "
      f"documents, {tot['train']['tokens'] / 1e6:.2f}M / {tot['val']['tokens'] / 1e6:.2f}M "
      f"tokens ({meta['dtype']}, tokenizer {t['name']}), input fingerprint "
      f"{meta['input_fingerprint']}"))


def from_token_files(d: ml_collections.ConfigDict, tok: Tokenizer, model_vocab: int) -> TokenSplits:
  for g in d.token_files.split(","):
    fs.check_access(g.strip(), "config.data.token_files")
  files = fs.expand(d.token_files)
  if len(files) < 2:
    raise ValueError(f"config.data.token_files={d.token_files!r} is invalid: matches "
                     f"{len(files)} file(s); at least 2 are needed to split train and val by file")
  if tok.vocab_size > model_vocab:
    raise ValueError(f"config.model.vocab_size={model_vocab} is invalid: smaller than the "
                     f"tokenizer's vocabulary ({tok.vocab_size})")
  shards = []
  for f in files:
    if _has_npy_header(f):
      shards.append(_npy_shard(f, d.token_dtype))
    elif d.token_dtype not in RAW_DTYPES:
      raise ValueError(f"config.data.token_dtype={d.token_dtype!r} is invalid: raw token file "
                       f"{f} needs one of {RAW_DTYPES}")
    else:
      shards.append(_raw_shard(f, d.token_dtype, "config.data.token_dtype"))
  check_ids(shards, tok.vocab_size, f"the tokenizer {tok.name}")
  flags = fs.split_files(files, d.val_fraction)
  train = [s for s, v in zip(shards, flags) if not v]
  val = [s for s, v in zip(shards, flags) if v]
  return TokenSplits(train, val, (
      f"tokens {d.token_files}: {len(train)} train / {len(val)} val files, "
      f"{sum(s.tokens for s in train) / 1e6:.2f}M / {sum(s.tokens for s in val) / 1e6:.2f}M "
      f"tokens (tokenizer {tok.name})"))


def load(d: ml_collections.ConfigDict, tok: Tokenizer, model_vocab: int) -> TokenSplits:
  if d.token_dir:
    return from_token_dir(d.token_dir, tok, model_vocab)
  return from_token_files(d, tok, model_vocab)
