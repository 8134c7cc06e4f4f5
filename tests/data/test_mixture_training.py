"""Data mixtures in training: a mixture of one is data.source=tokens; phd-data shows the windows
the train step is fed; kill -9 and a rerun on another device count give the uninterrupted run's
batches and losses; validation and tokens per source in metrics.jsonl."""
import json
import os
import shutil

import numpy as np
import pytest

from phd_jax.train.loop import train_and_evaluate
from tests import commands
from tests.data.mixture_sources import make_sources
from tests.data.mixture_worker import mixture_config, read_batches, record_batches
from tests.helpers import losses, tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.integration  # trains runs, runs phd-data and worker processes


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  return make_sources(tmp_path_factory.mktemp("mixture"))


@pytest.fixture(scope="module")
def straight(sources, tmp_path_factory):
  """The three-source run trained straight through on this process's one device: its workdir
  and the batches its train step was fed."""
  workdir = tmp_path_factory.mktemp("straight")
  with pytest.MonkeyPatch.context() as mp:
    record_batches(str(workdir / "batches.jsonl"), mp.setattr)
    train_and_evaluate(mixture_config(sources), str(workdir / "run"))
  return workdir / "run", read_batches(str(workdir / "batches.jsonl"))


def test_a_mixture_of_one_is_data_source_tokens_batch_for_batch(sources, tmp_path, capfd):
  got = {}
  for name in ("tokens", "mixture"):
    cfg = tiny_config("", steps=4, checkpoint_every=2)
    cfg.data.update(source=name, text_files="")
    if name == "tokens":
      cfg.data.token_dir = sources["prose"]
    else:
      cfg.data.mixture = {"prose": {"path": sources["prose"], "weight": 0.5}}
    with pytest.MonkeyPatch.context() as mp:
      record_batches(str(tmp_path / f"{name}.jsonl"), mp.setattr)
      summary = train_and_evaluate(cfg, str(tmp_path / name))
    got[name] = (read_batches(str(tmp_path / f"{name}.jsonl")), losses(tmp_path / name), summary)
  (a, la, sa), (b, lb, sb) = got["tokens"], got["mixture"]
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  for step in a:
    assert a[step]["inputs"] == b[step]["inputs"] and a[step]["targets"] == b[step]["targets"]
  assert la == lb
  assert sb["val_bits_per_byte"] == sa["val_bits_per_byte"]  # one source: its own split
  assert sb["val/prose/bits_per_byte"] == sa["val_bits_per_byte"]
  # A checkpoint from before mixtures: grain's handler wrote {"next_index": N}; it resumes exactly.
  old = tmp_path / "old"
  shutil.copytree(tmp_path / "tokens", old)
  shutil.rmtree(old / "checkpoints" / "4")
  (old / "checkpoints" / "2" / "data" / "process_0-of-1.json").write_text('{"next_index": 2}')
  meta = old / "checkpoints" / "2" / "_CHECKPOINT_METADATA"
  m = json.loads(meta.read_text())
  m["item_handlers"]["data"] = "grain._src.python.checkpoint.handler.CheckpointHandler"
  meta.write_text(json.dumps(m))
  cfg.data.update(source="tokens", token_dir=sources["prose"], mixture={})
  capfd.readouterr()
  train_and_evaluate(cfg, str(old))
  assert f"resumed from step 2 in {old}" in capfd.readouterr().out
  assert losses(old) == la


def test_phd_data_shows_the_windows_the_train_step_is_fed(sources, straight, tmp_path):
  _, fed = straight
  config = tmp_path / "mixture_config.py"
  config.write_text(
      "import json\nfrom tests.data.mixture_worker import mixture_config\n\n\n"
      f"def get_config():\n  return mixture_config(json.loads({json.dumps(sources)!r}))\n")
  cmd = commands.phd("phd-data", f"--config={config}", "--step=3", "--windows=12", "--json")
  shown = [json.loads(line) for line in cmd.stdout.splitlines()]
  assert [(w["step"], w["row"]) for w in shown] == [(s, r) for s in (3, 4, 5) for r in range(4)]
  for w in shown:  # steps 3, 4 and 5: across the change of weights at step 5
    batch = fed[w["step"]]
    assert w["ids"] == batch["inputs"][w["row"]] + batch["targets"][w["row"]][-1:]
    raw = np.fromfile(w["file"], "<u2")[w["offset"]:w["offset"] + len(w["ids"])]
    assert raw.tolist() == w["ids"]  # the file and offset it names hold those tokens
    assert w["file"].startswith(sources[w["source"]])
  assert {w["source"] for w in shown if w["step"] == 5} == {"legal", "prose"}  # code: 0 now
  text = commands.phd("phd-data", f"--config={config}", "--step=5", "--windows=1")
  first = shown[8]
  assert text.stdout.startswith(f"=== step 5 row 0 | source {first['source']} | window "
                                f"{first['window']}, epoch 1 | {first['file']} tokens "
                                f"{first['offset']}..{first['offset'] + 33}\n"), text.stdout


def _worker(sources, workdir, record, devices, kill_at=0):
  env = dict(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return commands.script(os.path.join(HERE, "mixture_worker.py"), json.dumps(sources),
                         str(workdir), str(record), str(kill_at), expect=None, timeout=600,
                         env=env)


def test_kill_9_and_a_rerun_on_two_devices_continue_the_same_stream(sources, straight, tmp_path):
  reference, fed = straight
  workdir, record = tmp_path / "run", tmp_path / "batches.jsonl"
  killed = _worker(sources, workdir, record, devices=1, kill_at=5)
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3"]  # 6 was never reached
  # The position is global: written by a run of another host count, it reads all the same.
  data = workdir / "checkpoints" / "3" / "data"
  shutil.move(data / "process_0-of-1.json", data / "process_0-of-2.json")
  rerun = _worker(sources, workdir, record, devices=2)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"resumed from step 3 in {workdir}" in rerun.stdout
  assert '"devices": 2' in rerun.stdout
  got = read_batches(str(record))  # steps 1-5 of the killed run, 4-8 of the rerun
  assert sorted(got) == list(range(1, 9))
  for step, batch in got.items():  # across the change of weights at step 5
    assert batch["inputs"] == fed[step]["inputs"], step
  a, b = losses(reference), losses(workdir)
  assert sorted(b) == list(range(1, 9))
  np.testing.assert_allclose([b[s] for s in range(1, 9)], [a[s] for s in range(1, 9)],
                             rtol=2e-5)


def test_metrics_hold_validation_and_tokens_per_source(straight):
  reference, fed = straight
  with open(reference / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  val = [r for r in rows if "val_bits_per_byte" in r]
  assert [r["step"] for r in val] == [4, 8]
  for r in val:
    per = {n: r[f"val/{n}/bits_per_byte"] for n in ("code", "legal", "prose")}
    mean = (3 * per["code"] + 2 * per["legal"] + 1 * per["prose"]) / 6  # the base weights
    assert r["val_bits_per_byte"] == pytest.approx(mean, rel=1e-9)
    assert len(set(per.values())) == 3  # three splits, three numbers
  last = [r for r in rows if "loss" in r][-1]
  for name in ("code", "legal", "prose"):  # from the batches the step was fed
    windows = sum(_source_of(row) == name for s in range(1, 9) for row in fed[s]["inputs"])
    assert last[f"data/{name}/tokens"] == windows * 32
    assert last[f"data/{name}/epochs"] > 0


def _source_of(ids):
  """Which test source a window's bytes come from: each has its own words."""
  from tests.data.mixture_sources import WORDS
  words = set(bytes(i for i in ids if i < 256).decode().split()[1:-1])
  assert words, ids
  return next(n for n, ws in WORDS.items() if words <= set(ws))
