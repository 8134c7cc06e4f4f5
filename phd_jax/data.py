"""Training data, as fixed-length windows that grain shuffles, slices per host and batches.

Sources (`config.data.source`): `stdlib` and `text_files` are bytes of text files, no download;
`tokens` is pretokenized data (phd_jax.prepare's shards or token files made elsewhere, see
phd_jax.token_data). Default corpus: the running interpreter's own standard library (.py
files, site-packages excluded): ~30 MB of real text on every machine that runs this code. Its size
and a fingerprint are logged, since different Python versions ship different files.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import sysconfig
from typing import NamedTuple

import grain
import ml_collections
import numpy as np

from phd_jax.tokenizers import Tokenizer

EOS_ID = 256  # ends every file; bytes are ids 0..255
TOKENIZER_VOCAB = 257


def encode(text: str | bytes) -> np.ndarray:
  data = text.encode("utf-8") if isinstance(text, str) else text
  return np.frombuffer(data, np.uint8).astype(np.int32)


def decode(ids) -> str:
  ids = [int(i) for i in np.asarray(ids).ravel()]
  return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


@dataclasses.dataclass(frozen=True)
class Corpus:
  name: str
  train: np.ndarray  # [N] uint16 token ids, files separated by EOS
  val: np.ndarray
  train_files: int
  val_files: int
  fingerprint: str

  def describe(self) -> str:
    return (f"corpus {self.name}: {self.train_files} train / {self.val_files} val files, "
            f"{self.train.size / 1e6:.2f}M / {self.val.size / 1e6:.2f}M tokens, "
            f"fingerprint {self.fingerprint}")


def stdlib_files() -> tuple[str, list[str]]:
  root = sysconfig.get_paths()["stdlib"]
  files = [f for f in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
           if "site-packages" not in os.path.relpath(f, root).split(os.sep)]
  return root, sorted(files)


def is_val(relpath: str, val_fraction: float) -> bool:
  digest = hashlib.sha1(relpath.encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def load_corpus(d: ml_collections.ConfigDict) -> Corpus:
  """Reads and splits the corpus by file (deterministic: a hash of each file's relative path)."""
  if d.source == "stdlib":
    root, files = stdlib_files()
    name = f"stdlib (Python {sysconfig.get_python_version()}, {root})"
  else:
    files = sorted({f for g in d.text_files.split(",") for f in glob.glob(g.strip(), recursive=True)
                    if os.path.isfile(f)})
    root, name = (os.path.commonpath(files) if files else ""), f"text_files ({d.text_files})"
  if len(files) < 2:
    raise ValueError(f"config.data: source {name} has {len(files)} file(s); at least 2 are "
                     "needed to split train and validation by file")
  rel = [os.path.relpath(f, root) if root else f for f in files]
  flags = [is_val(r, d.val_fraction) for r in rel]
  if all(flags) or not any(flags):  # tiny corpora: force one file to each side
    flags = [i == len(files) - 1 for i in range(len(files))]
  parts = {False: [], True: []}
  hasher = hashlib.sha256()
  for f, r, v in zip(files, rel, flags):
    with open(f, "rb") as fh:
      data = fh.read()
    hasher.update(r.encode() + b"\0" + data)
    parts[v].append(np.frombuffer(data, np.uint8).astype(np.uint16))
    parts[v].append(np.array([EOS_ID], np.uint16))
  return Corpus(name, np.concatenate(parts[False]), np.concatenate(parts[True]),
                flags.count(False), flags.count(True), hasher.hexdigest()[:16])


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
    from phd_jax import token_data  # local: token_data imports this module
    s = token_data.load(d, tok, model_vocab)
    return Splits(token_data.TokenWindows(s.train, seq_len, "train"),
                  token_data.TokenWindows(s.val, seq_len, "val"), s.description)
  corpus = load_corpus(d)
  return Splits(Windows(corpus.train, seq_len), Windows(corpus.val, seq_len), corpus.describe())


def _windows(tokens, seq_len: int) -> grain.sources.RandomAccessDataSource:
  return Windows(tokens, seq_len) if isinstance(tokens, np.ndarray) else tokens


Source = np.ndarray | grain.sources.RandomAccessDataSource


def train_dataset(tokens: Source, seq_len: int, batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """Shuffled, endlessly repeated batches; each host reads its own slice of the windows.

  `tokens` is a token array or a source of windows (Windows, token_data.TokenWindows); seq_len
  only applies to an array. `batch_size` is per host. The iterator's state (a position) is
  checkpointed with the model.
  """
  ds = grain.MapDataset.source(_windows(tokens, seq_len)).shuffle(seed=seed).repeat(None)
  ds = ds.slice(slice(process_index, None, process_count))
  return ds.batch(batch_size, drop_remainder=True).to_iter_dataset()


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
