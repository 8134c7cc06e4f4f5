"""Text corpora read as bytes, no download: `config.data.source` = stdlib or text_files.

The default corpus is the running interpreter's own standard library (.py files, site-packages
excluded): ~30 MB of real text on every machine that runs this code. Its size and a fingerprint
are logged, since different Python versions ship different files. Files are split into train and
validation by a hash of their relative paths (phd_jax.files.split_files). `data.text_files` globs
may name `gs://` / `s3://` URLs: each file is read whole into memory; the split and the fingerprint
are those of the same files on local disk.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sysconfig

import ml_collections
import numpy as np

from phd_jax import files as fs
from phd_jax.data.tokenizers import ByteTokenizer


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
  files = [f for f in fs.expand(fs.join(root, "**", "*.py"))
           if "site-packages" not in fs.relpath(f, root).split(os.sep)]
  return root, files


def load_corpus(d: ml_collections.ConfigDict) -> Corpus:
  """Reads and splits the corpus by file (deterministic: a hash of each file's relative path)."""
  if d.source == "stdlib":
    root, files = stdlib_files()
    name = f"stdlib (Python {sysconfig.get_python_version()}, {root})"
  else:
    for g in d.text_files.split(","):
      fs.check_access(g.strip(), "config.data.text_files")
    files = fs.expand(d.text_files)
    root, name = (fs.commonpath(files) if files else ""), f"text_files ({d.text_files})"
  if len(files) < 2:
    raise ValueError(f"config.data: source {name} has {len(files)} file(s); at least 2 are "
                     "needed to split train and validation by file")
  flags = fs.split_files(files, d.val_fraction, root)
  eos = np.array([ByteTokenizer.eos_id], np.uint16)  # ends every file; bytes are ids 0..255
  parts = {False: [], True: []}
  hasher = hashlib.sha256()
  for f, v in zip(files, flags):
    data = fs.read_bytes(f)
    hasher.update((fs.relpath(f, root) if root else f).encode() + b"\0" + data)
    parts[v] += [np.frombuffer(data, np.uint8).astype(np.uint16), eos]
  return Corpus(name, np.concatenate(parts[False]), np.concatenate(parts[True]),
                flags.count(False), flags.count(True), hasher.hexdigest()[:16])
