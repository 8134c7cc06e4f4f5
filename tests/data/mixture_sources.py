"""Small prepared token sources for the mixture tests: each its own vocabulary of words, so a
window's text says which source it came from; bytes tokenizer, a validation split each."""
import os

import numpy as np

from phd_jax.data import prepare

WORDS = {"code": ["def", "return", "self", "import", "class"],
         "prose": ["the", "cat", "sat", "on", "a", "mat"],
         "legal": ["shall", "party", "license", "herein"]}


def make_sources(root, docs: int = 24, lines: int = 30) -> dict[str, str]:
  """{name: phd-prepare folder} under `root` (a pathlib.Path), one per WORDS entry."""
  rng = np.random.default_rng(0)
  out = {}
  for name, words in WORDS.items():
    raw = root / f"{name}_text"
    raw.mkdir()
    for i in range(docs):
      (raw / f"{i:03d}.txt").write_text(
          "\n".join(" ".join(rng.choice(words, 6)) for _ in range(lines)))
    out[name] = str(root / name)
    prepare.prepare(input=os.path.join(raw, "*.txt"), tokenizer="bytes", out=out[name],
                    val_fraction=0.2, progress=False)
  return out
