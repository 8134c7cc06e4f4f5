"""Training with its workdir in a bucket (gs:// on gcp-storage-emulator, s3:// on moto): the
checkpoints, metrics.jsonl, TensorBoard events and tokenizer copy land in the bucket, a preempted
run resumes there with the losses of an uninterrupted one, and the read-only commands load it."""
import json
import os

import numpy as np
import pytest

from phd_jax import files
from phd_jax.run.load import load_run
from phd_jax.train.loop import train_and_evaluate
from tests.helpers import tiny_config


class Preempted(Exception):
  pass


def _losses(workdir: str) -> dict[int, float]:
  rows = [json.loads(line) for line in files.read_text(files.join(workdir, "metrics.jsonl"))
          .splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_a_bucket_workdir_trains_resumes_and_loads(bucket, corpus_glob, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # nothing local may appear for the URL
  cfg = tiny_config(corpus_glob, steps=6, checkpoint_every=3, profile_steps=(2, 3))
  local = str(tmp_path / "local")
  train_and_evaluate(cfg, local)
  run = files.join(bucket, "run")

  def preempt(step):
    if step == 5:
      raise Preempted
  with pytest.raises(Preempted):
    train_and_evaluate(cfg, run, on_step=preempt)
  assert sorted(_losses(run)) == [1, 2, 3, 4, 5]
  train_and_evaluate(cfg, run)  # resumes from the step-3 checkpoint in the bucket
  a, b = _losses(local), _losses(run)
  assert sorted(b) == list(range(1, 7))
  np.testing.assert_allclose([b[s] for s in range(1, 7)], [a[s] for s in range(1, 7)], rtol=1e-6)

  held = files.expand(f"{run}/**")
  names = {files.relpath(p, run).split("/")[0] for p in held}
  assert {"checkpoints", "metrics.jsonl", "tb"} <= names, names
  assert any("/profile/" in p and p.endswith(".xplane.pb") for p in held)
  steps = sorted(n for n in files.listdir(files.join(run, "checkpoints")) if n.isdigit())
  assert steps == ["3", "6"]
  assert sorted(os.listdir(tmp_path)) == ["local"]  # no `gs:` or `s3:` folder

  model, saved, step = load_run(run)
  assert step == 6 and saved.train.steps == 6



def test_damaged_and_unfinished_steps_in_a_bucket(gs_url, corpus_glob, tmp_path, capfd):
  """The newest step cut short in the bucket is named, moved aside (STEP.damaged, kept) and the
  step before restored; the recomputed losses equal the first run's. A step without its commit
  file (a save cut short) is removed at the next start."""
  cfg = tiny_config(corpus_glob, steps=6, checkpoint_every=3)
  run = f"{gs_url}/{tmp_path.name}/run"
  train_and_evaluate(cfg, run)
  first = _losses(run)
  data = files.join(run, "checkpoints", "6", "state", "ocdbt.process_0", "d")
  for obj in files.listdir(data):
    path = files.join(data, obj)
    if files.size(path) > 4096:
      files.write_bytes(path, files.read_range(path, 0, files.size(path) // 2))
  files.write_text(files.join(run, "checkpoints", "9", "state", "x"), "an unfinished save")
  capfd.readouterr()
  train_and_evaluate(cfg, run)
  err = capfd.readouterr().err
  assert "removed the unfinished checkpoint save(s) 9" in err, err
  assert f"warning: checkpoint step 6 in {run}/checkpoints does not restore (ValueError: " in err
  assert f"moved it aside to {run}/checkpoints/6.damaged (kept, never deleted) and restored " \
         "step 3" in err
  assert sorted(files.listdir(files.join(run, "checkpoints"))) == ["3", "6", "6.damaged"]
  again = _losses(run)
  np.testing.assert_allclose([again[s] for s in (4, 5, 6)], [first[s] for s in (4, 5, 6)],
                             rtol=1e-6)
