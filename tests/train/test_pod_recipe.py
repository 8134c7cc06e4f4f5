"""docs/scaling.md's pod recipe, run as written against the GCS emulator: the only difference from
a user's shell is STORAGE_EMULATOR_HOST (and a bucket named my-bucket in the emulator, holding a
small corpus and tokenizer, as the recipe assumes; made here in the tests' emulator). The pod
command itself (a 1.2B model on several hosts) cannot run here: it is checked to be the smoke
test's data flags with the real config, its own workdir and --distributed, so the two cannot
drift apart."""
import json
import os
import re
import shlex

import numpy as np
import pytest

from phd_jax import files
from tests import commands
from tests.helpers import ROOT

DOC = os.path.join(ROOT, "docs", "scaling.md")


def _commands(block: str) -> list[list[str]]:
  text = re.sub(r"#[^\n]*", "", block).replace("\\\n", " ")
  return [shlex.split(line) for line in text.splitlines() if line.strip()]


def _blocks() -> tuple[str, str]:
  doc = open(DOC).read()
  recipe = re.search(r"<!-- pod recipe[^>]*-->\s*```bash\n(.*?)```\s*<!-- /pod recipe -->", doc,
                     re.S).group(1)
  after = doc[doc.index("<!-- /pod recipe -->"):]
  pod = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
  return recipe, pod


@pytest.mark.integration
def test_the_pod_recipe_runs_as_written(gs_url, bpe_path, tmp_path):
  recipe, pod = _blocks()
  recipe_commands = _commands(recipe)
  assert [c[0] for c in recipe_commands] == [".venv/bin/phd-prepare", ".venv/bin/phd-train",
                                      ".venv/bin/phd-train", ".venv/bin/phd-generate"]
  gcs = files.filesystem(gs_url)  # the bucket the recipe assumes, with a corpus and tokenizer
  if not gcs.exists("my-bucket"):
    gcs.mkdir("my-bucket")
  rng = np.random.default_rng(0)
  words = ["the", "model", "reads", "every", "token", "twice", "and", "keeps", "one"]
  for i in range(4):
    docs = [{"text": " ".join(rng.choice(words, 60))} for _ in range(600)]
    files.write_text(f"gs://my-bucket/corpus/part{i}.jsonl",
                     "\n".join(json.dumps(d) for d in docs))
  files.copy_file(bpe_path, "gs://my-bucket/tokenizer.json")
  path = {"PATH": commands.BIN + os.pathsep + os.environ["PATH"]}
  outs = []
  for cmd in recipe_commands:  # .venv/bin/phd-NAME: this venv's
    outs.append(commands.phd(os.path.basename(cmd[0]), *cmd[1:], env=path, timeout=600).stdout)
  assert "done: steps=4" in outs[1] and "resumed from step 4" in outs[2]
  assert "checkpoint step 4" in outs[3]
  assert files.isfile("gs://my-bucket/tokens/metadata.json")
  assert files.isfile("gs://my-bucket/smoke/metrics.jsonl")
  assert "4" in files.listdir("gs://my-bucket/smoke/checkpoints")
  assert not any(n.startswith("gs:") for n in os.listdir(ROOT))  # nothing local for a URL

  (run,) = _commands(pod)
  smoke = recipe_commands[1]
  flag = lambda args, name: [a for a in args if a.startswith(f"--{name}")]
  assert run[0] == smoke[0] and "--distributed" in run
  assert flag(run, "config.data") == flag(smoke, "config.data")
  assert flag(run, "config=") == ["--config=configs/model_1_2b.py:phd_cswa"]
  assert flag(run, "workdir") == ["--workdir=gs://my-bucket/run"]
