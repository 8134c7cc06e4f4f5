"""Weights & Biases (config.log.wandb, phd_jax/train/wandb_log.py), offline only: no test here
talks to W&B's servers. A run killed with kill -9 and rerun logs to one W&B run whose history,
read back from W&B's own run files, is metrics.jsonl's; W&B off never imports wandb; a bad mode
or a missing package fails at start with one line."""
import glob
import json
import os
import struct
import sys
import zlib

import pytest

from phd_jax.config import validate_config
from tests import commands
from tests.helpers import losses, tiny_config, tiny_flags

# A training run in a fresh process, W&B offline, that kills itself (SIGKILL: no handler, no
# final checkpoint, like `kill -9`) once step KILL_AT is done (0: runs to the end); argv[4]:
# JSON of config.train fields besides these.
RUN = """
import json, os, signal, sys
from phd_jax.train.loop import train_and_evaluate
from tests.helpers import tiny_config

corpus, workdir, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = tiny_config(corpus, **{"steps": 8, "checkpoint_every": 3, "keep_checkpoints": 3,
                             "val_every": 4, "sample_tokens": 6, **json.loads(sys.argv[4])})
cfg.log.wandb.update(mode="offline", project="phd-jax-test", tags="test,offline")

def kill(step):
  if step == kill_at:
    os.kill(os.getpid(), signal.SIGKILL)
train_and_evaluate(cfg, workdir, on_step=kill)
"""
SAMPLE = "----- sample -----\n"


def wandb_env(tmp_path) -> dict[str, str]:
  """W&B quiet, and its own settings and caches in the test's folder (never ~/.config)."""
  return {"WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),
          "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
          "WANDB_DATA_DIR": str(tmp_path / "wandb_data")}


def read_records(path: str) -> list:
  """The records of a W&B run file (run-ID.wandb), decoded with wandb's own protobuf schema.
  The file is W&B's header (':W&B', 0xBEE1, version 0) and then LevelDB's log format: 32 KiB
  blocks of chunks, each a CRC-32 (IEEE, of the chunk's type byte and data), a length, a type
  (1 whole, 2 first, 3 middle, 4 last) and the data. wandb 0.31 has no Python reader of it."""
  from wandb.proto import wandb_internal_pb2

  data = open(path, "rb").read()
  assert data[:7] == b":W&B\xe1\xbe\x00", f"{path} is not a W&B run file"
  records, parts, i = [], [], 7
  while i + 7 <= len(data):
    if 32768 - i % 32768 < 7:  # a block's tail too short for a chunk header: padding
      i += 32768 - i % 32768
      continue
    crc, n, kind = struct.unpack("<IHB", data[i:i + 7])
    chunk = data[i + 7:i + 7 + n]
    assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad chunk at {i}"
    parts.append(chunk)
    i += 7 + n
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(b"".join(parts))
      records.append(record)
      parts = []
  return records


def history(records: list) -> list[dict]:
  """The logged rows, W&B's own fields (_step, _runtime, _timestamp) left out."""
  rows = []
  for r in records:
    if r.WhichOneof("record_type") == "history":
      row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
             for item in r.history.item}
      rows.append({k: v for k, v in row.items() if not k.startswith("_")})
  return rows


def by_step(rows: list[dict]) -> dict[tuple[int, str], float]:
  """{(step, field): value}; a field logged at a step twice keeps the later value."""
  out = {}
  for row in rows:
    out.update({(row["step"], k): v for k, v in row.items() if k != "step"})
  return out


@pytest.mark.integration  # two training processes
def test_kill_9_and_a_rerun_log_one_wandb_run_equal_to_metrics_jsonl(corpus_glob, tmp_path):
  pytest.importorskip("wandb", reason="the wandb extra: pip install -e '.[test,wandb]'")
  workdir, env = tmp_path / "run", wandb_env(tmp_path)
  killed = commands.python(RUN, corpus_glob, workdir, 5, "{}", expect=None, timeout=600,
                           env=env)
  assert killed.returncode == -9, killed.stderr[-3000:]
  run_id = json.loads((workdir / "wandb_run.json").read_text())["id"]
  rerun = commands.python(RUN, corpus_glob, workdir, 0, "{}", timeout=600, env=env)
  assert f"resumed from step 3 in {workdir}" in rerun.stdout
  assert json.loads((workdir / "wandb_run.json").read_text()) == {"id": run_id, "closed_step": 8}

  files = sorted(glob.glob(str(workdir / "wandb" / "offline-run-*" / "run-*.wandb")))
  assert len(files) == 2 and all(f.endswith(f"-{run_id}{os.sep}run-{run_id}.wandb")
                                 for f in files), files  # one per process, oldest first
  first, second = (read_records(f) for f in files)
  # Both opened the one run (each file is named by its id). The killed process's records are in
  # its file only if W&B's writer flushed them (every 15 s) before the kill; the rerun's all are.
  opened = [records for records in (first, second)
            if any(r.WhichOneof("record_type") == "run" for r in records)]
  assert opened[-1] is second
  for records in opened:  # the run, its tags and the config
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.run_id, run.project) == (run_id, "phd-jax-test")
    assert list(run.tags) == ["test", "offline"]
    config = {i.key: json.loads(i.value_json) for r in records
              if r.WhichOneof("record_type") == "config" for i in r.config.update}
    assert config["model"]["phd"]["variant"] == "phd_cswa" and config["workdir"] == str(workdir)

  # metrics.jsonl: steps 1-3 of the killed process, 4-8 of the rerun, validation at 4 and 8.
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert sorted(losses(workdir)) == list(range(1, 9))
  assert [r["step"] for r in rows if "val_bits_per_byte" in r] == [4, 8]
  jsonl = by_step([{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in rows])
  logged = by_step(history(first) + history(second))  # the rerun's value where both logged
  assert logged == jsonl
  assert {s: v for (s, k), v in logged.items() if k == "loss"} == losses(workdir)
  # The end of the run: the sample as printed, and the final validation, in the run's summary.
  summary = {i.key: json.loads(i.value_json) for r in second
             if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
  sample = rerun.stdout.split(SAMPLE, 1)[1].split("\n------------------\n", 1)[0]
  assert summary["sample"] == sample and sample.startswith("def ")
  assert summary["val_bits_per_byte"] == rows[-1]["val_bits_per_byte"]
  exits = [r.exit.exit_code for r in second if r.WhichOneof("record_type") == "exit"]
  assert exits == [0] and not any(r.WhichOneof("record_type") == "exit" for r in first)


OFF = """
import json, sys
from phd_jax.train.loop import train_and_evaluate
from tests.helpers import tiny_config

tried = []

class Watch:  # records every attempt to find or import wandb; finds nothing itself
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "wandb":
      tried.append(name)

sys.meta_path.insert(0, Watch())
cfg = tiny_config(sys.argv[1], steps=2, checkpoint_every=2)
assert cfg.log.wandb.mode == "off"
summary = train_and_evaluate(cfg, sys.argv[2])
print(json.dumps({"tried": tried, "imported": "wandb" in sys.modules, "step": summary["step"]}))
"""


@pytest.mark.integration  # a training process
def test_wandb_off_never_imports_it(corpus_glob, tmp_path):
  done = commands.python(OFF, corpus_glob, tmp_path / "run", timeout=600)
  found = json.loads(done.stdout.strip().splitlines()[-1])
  assert found == {"tried": [], "imported": False, "step": 2}
  assert not (tmp_path / "run" / "wandb").exists()
  assert not (tmp_path / "run" / "wandb_run.json").exists()


@pytest.mark.parametrize("field,value,allowed", [
    ("mode", "on", "allowed: ('off', 'online', 'offline')"),
    ("tags", ["a"], "expected a string"),
    ("project", "", "name a W&B project"),
])
def test_bad_wandb_fields_fail_by_name(corpus_glob, field, value, allowed):
  cfg = tiny_config(corpus_glob)
  cfg.log.wandb.mode = "offline"
  with cfg.ignore_type():
    cfg.log.wandb[field] = value
  with pytest.raises(ValueError, match=f"config.log.wandb.{field}=.* is invalid: ") as e:
    validate_config(cfg, 257)
  assert allowed in str(e.value)


def test_wandb_on_without_the_package_fails_saying_how_to_install(corpus_glob, monkeypatch):
  cfg = tiny_config(corpus_glob)
  cfg.log.wandb.mode = "online"
  monkeypatch.setitem(sys.modules, "wandb", None)  # what importlib finds when it is not installed
  with pytest.raises(ValueError, match=r"config.log.wandb.mode='online' is invalid: the wandb "
                     r"package is not installed: pip install -e '\.\[wandb\]'"):
    validate_config(cfg, 257)
  cfg.log.wandb.mode = "off"
  validate_config(cfg, 257)  # off: nothing needs it


@pytest.mark.integration  # a command
def test_phd_train_with_a_bad_mode_fails_with_one_line(corpus_glob, tmp_path):
  done = commands.phd("phd-train", *tiny_flags(corpus_glob), f"--workdir={tmp_path / 'run'}",
                      "--config.log.wandb.mode=cloud", expect=1)
  assert done.stderr.strip().splitlines() == [
      "error: config.log.wandb.mode='cloud' is invalid: allowed: ('off', 'online', 'offline')"]


@pytest.mark.integration  # a training process
def test_a_bucket_workdir_keeps_its_wandb_run_in_the_bucket(gs_url, corpus_glob, tmp_path):
  pytest.importorskip("wandb", reason="the wandb extra: pip install -e '.[test,wandb]'")
  from phd_jax import files

  run, cwd = f"{gs_url}/{tmp_path.name}/run", tmp_path / "cwd"
  cwd.mkdir()
  small = json.dumps({"steps": 2, "checkpoint_every": 2, "val_every": 2, "sample_tokens": 0})
  commands.python(RUN, corpus_glob, run, 0, small, timeout=600, env=wandb_env(tmp_path), cwd=cwd)
  known = json.loads(files.read_text(files.join(run, "wandb_run.json")))
  assert known["closed_step"] == 2
  uploaded = files.expand(f"{run}/wandb/offline-run-*/run-*.wandb")
  assert len(uploaded) == 1 and uploaded[0].endswith(f"run-{known['id']}.wandb"), uploaded
  local = tmp_path / "run.wandb"
  local.write_bytes(files.read_bytes(uploaded[0]))
  logged = by_step(history(read_records(str(local))))
  assert {s: v for (s, k), v in logged.items() if k == "loss"} == losses(run)
  assert sorted(losses(run)) == [1, 2]
  assert os.listdir(cwd) == []  # no `gs:` folder; W&B's temporary folder is elsewhere


@pytest.mark.integration  # a process of its own: W&B's service stays out of the test worker
def test_wandb_online_without_a_login_fails_with_one_line(tmp_path):
  pytest.importorskip("wandb", reason="the wandb extra: pip install -e '.[test,wandb]'")
  code = ("import sys\nfrom phd_jax.config import default_config\n"
          "from phd_jax.train import wandb_log\n"
          "cfg = default_config()\ncfg.log.wandb.mode = 'online'\n"
          "try:\n  wandb_log.start(cfg, sys.argv[1])\nexcept ValueError as e:\n  print(e)\n")
  env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # no API key
  env.update(HOME=str(tmp_path), WANDB_BASE_URL="http://127.0.0.1:9",  # no ~/.netrc, no network
             **wandb_env(tmp_path))
  done = commands.python(code, tmp_path / "run", clean_env=env, timeout=120)
  run_id = json.loads((tmp_path / "run" / "wandb_run.json").read_text())["id"]  # kept for a retry
  [line] = done.stdout.strip().splitlines()  # W&B's own reason in the middle (its wording)
  assert line.startswith(f"W&B could not start run {run_id} (config.log.wandb.mode='online'): ")
  assert "API key" in line and "wandb login" in line, line
  assert line.endswith(" Or set log.wandb.mode='offline' (then `wandb sync`) or 'off'."), line
