import os

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def corpus_glob(tmp_path_factory):
  """A small deterministic corpus of text files (fast to load, easy to learn)."""
  root = tmp_path_factory.mktemp("corpus")
  rng = np.random.default_rng(0)
  words = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "value"]
  for i in range(12):
    lines = [" ".join(rng.choice(words, size=6)) + ":" for _ in range(200)]
    (root / f"file{i:02d}.txt").write_text("\n".join(lines))
  return str(root / "*.txt")


@pytest.fixture(scope="session")
def bpe_path(tmp_path_factory, corpus_glob):
  """A small byte-level BPE (phd_jax/data/bpe.py) trained on the test corpus: a second or two."""
  import glob

  from phd_jax.data.bpe import train_bpe
  path = str(tmp_path_factory.mktemp("bpe") / "bpe.json")
  train_bpe(sorted(glob.glob(corpus_glob)), vocab_size=320, out=path)
  return path
