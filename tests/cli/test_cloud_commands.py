"""The commands with their workdir in a bucket (the GCS emulator, selected by
STORAGE_EMULATOR_HOST alone): train, generate, evaluate and hf export read and write gs:// as a
user types it; storage out of reach fails before step 1 with one `error:` line naming the
workdir. Nothing local is ever created for a URL."""
import json
import os
import subprocess
import sys
import time

from phd_jax import files
from tests.eval.test_evaluate import OFFLINE
from tests.helpers import ROOT
from tests.storage import free_port

BIN = os.path.dirname(sys.executable)


def _run(args, cwd, **env):
  return subprocess.run([os.path.join(BIN, args[0]), *args[1:]], cwd=cwd, capture_output=True,
                        text=True, timeout=300, env={**os.environ, **OFFLINE, **env})


def test_commands_on_a_bucket_workdir(gs_url, corpus_glob, local_task, tmp_path):
  run, cwd = f"{gs_url}/{tmp_path.name}/run", tmp_path / "cwd"
  os.makedirs(cwd)
  p = _run(["phd-train", f"--config={ROOT}/configs/model_tiny.py:vanilla", f"--workdir={run}",
            "--config.data.source=text_files", f"--config.data.text_files={corpus_glob}",
            "--config.train.steps=2", "--config.train.batch_size=2", "--config.train.seq_len=16",
            "--config.train.val_batches=1"], cwd)
  assert p.returncode == 0, p.stderr[-3000:]
  assert f"workdir={run}" in p.stdout.strip().splitlines()[-1]
  assert files.isfile(f"{run}/metrics.jsonl") and files.isdir(f"{run}/checkpoints/2")

  p = _run(["phd-generate", f"--workdir={run}", "--max_new_tokens=4", "--prompt=def"], cwd)
  assert p.returncode == 0 and "checkpoint step 2" in p.stdout, p.stderr[-3000:]

  p = _run(["phd-evaluate", f"--workdir={run}", "--tasks=toy_mc", f"--include_path={local_task}",
            "--batch_size=4", f"--out={run}/eval.json"], cwd)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "acc,none" in json.loads(files.read_text(f"{run}/eval.json"))["results"]["toy_mc"]

  p = _run(["phd-hf", "export", f"--workdir={run}", f"--out={run}/hf"], cwd)
  assert p.returncode == 0, p.stderr[-3000:]
  assert json.loads(files.read_text(f"{run}/hf/config.json"))["model_type"] == "olmo2"
  assert files.size(f"{run}/hf/model.safetensors") > 0
  assert os.listdir(cwd) == []  # no `gs:` folder


def test_storage_out_of_reach_fails_before_anything_is_built(gs_url, corpus_glob, tmp_path):
  nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
  t0 = time.time()
  p = _run(["phd-train", f"--config={ROOT}/configs/model_tiny.py", "--workdir=gs://b/run",
            "--config.data.source=text_files", f"--config.data.text_files={corpus_glob}"],
           tmp_path, STORAGE_EMULATOR_HOST=nowhere)
  assert p.returncode == 1 and "Traceback" not in p.stderr and "step" not in p.stdout
  last = p.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --workdir=gs://b/run: cannot reach gs:// storage at "
                         f"http://{nowhere}") and "STORAGE_EMULATOR_HOST" in last, p.stderr
  assert time.time() - t0 < 60 and os.listdir(tmp_path) == []
  p = _run(["phd-generate", "--workdir=gs://no-such-bucket/run", "--prompt=x"], tmp_path)
  assert p.returncode == 1 and "Traceback" not in p.stderr
  assert p.stderr.strip().splitlines()[-1].startswith(
      "error: --workdir=gs://no-such-bucket/run is invalid: nothing at gs://no-such-bucket/run "
      "(a missing bucket")
  assert os.listdir(tmp_path) == []
