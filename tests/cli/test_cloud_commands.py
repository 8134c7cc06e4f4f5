"""The commands with their workdir in a bucket (the GCS emulator, selected by
STORAGE_EMULATOR_HOST alone): train, generate, evaluate and hf export read and write gs:// as a
user types it; storage out of reach fails before step 1 with one `error:` line naming the
workdir. Nothing local is ever created for a URL."""
import json
import os
import time

import pytest

from phd_jax import files
from tests import commands
from tests.helpers import tiny_flags
from tests.storage import free_port

pytestmark = pytest.mark.integration


def test_commands_on_a_bucket_workdir(gs_url, corpus_glob, local_task, tmp_path):
  run, cwd = f"{gs_url}/{tmp_path.name}/run", tmp_path / "cwd"
  os.makedirs(cwd)
  p = commands.phd("phd-train", f"--workdir={run}",
                   *tiny_flags(corpus_glob, "vanilla", steps=2, seq_len=16), cwd=cwd)
  assert f"workdir={run}" in p.stdout.strip().splitlines()[-1]
  assert files.isfile(f"{run}/metrics.jsonl") and files.isdir(f"{run}/checkpoints/2")

  p = commands.phd("phd-generate", f"--workdir={run}", "--max_new_tokens=4", "--prompt=def",
                   cwd=cwd)
  assert "checkpoint step 2" in p.stdout

  commands.phd("phd-evaluate", f"--workdir={run}", "--tasks=toy_mc",
                f"--include_path={local_task}", "--batch_size=4", f"--out={run}/eval.json",
                cwd=cwd)
  assert "acc,none" in json.loads(files.read_text(f"{run}/eval.json"))["results"]["toy_mc"]

  commands.phd("phd-hf", "export", f"--workdir={run}", f"--out={run}/hf", cwd=cwd)
  assert json.loads(files.read_text(f"{run}/hf/config.json"))["model_type"] == "olmo2"
  assert files.size(f"{run}/hf/model.safetensors") > 0
  assert os.listdir(cwd) == []  # no `gs:` folder


def test_storage_out_of_reach_fails_before_anything_is_built(gs_url, corpus_glob, tmp_path):
  nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
  t0 = time.time()
  p = commands.phd("phd-train", "--workdir=gs://b/run", *tiny_flags(corpus_glob), cwd=tmp_path,
                   env={"STORAGE_EMULATOR_HOST": nowhere}, expect=1)
  assert "Traceback" not in p.stderr and "step" not in p.stdout
  last = p.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --workdir=gs://b/run: cannot reach gs:// storage at "
                         f"http://{nowhere}") and "STORAGE_EMULATOR_HOST" in last, p.stderr
  assert time.time() - t0 < 60 and os.listdir(tmp_path) == []
  p = commands.phd("phd-generate", "--workdir=gs://no-such-bucket/run", "--prompt=x",
                   cwd=tmp_path, expect=1)
  assert "Traceback" not in p.stderr
  assert p.stderr.strip().splitlines()[-1].startswith(
      "error: --workdir=gs://no-such-bucket/run is invalid: nothing at gs://no-such-bucket/run "
      "(a missing bucket")
  assert os.listdir(tmp_path) == []
