"""Training with its workdir in a bucket (gs:// on gcp-storage-emulator, s3:// on moto): the
checkpoints, metrics.jsonl, TensorBoard events and tokenizer copy land in the bucket, a preempted
run resumes there with the losses of an uninterrupted one, and the read-only commands load it."""
import os

import numpy as np
import pytest

from phd_jax import files
from phd_jax.checkpoints.load import load_run
from phd_jax.train.loop import train_and_evaluate
from tests.helpers import RESUMABLE_RUN, Preempted, losses, preempt_after, tiny_config


@pytest.mark.integration
def test_a_bucket_workdir_trains_resumes_and_loads(bucket, corpus_glob, trained_runs, tmp_path,
                                                   monkeypatch):
  monkeypatch.chdir(tmp_path)  # nothing local may appear for the URL
  local = losses(trained_runs(tiny_config(corpus_glob, **RESUMABLE_RUN)))  # 8 steps, uncut
  cfg = tiny_config(corpus_glob, **RESUMABLE_RUN, profile_steps=(2, 3))
  run = files.join(bucket, "run")
  with pytest.raises(Preempted):
    train_and_evaluate(cfg, run, on_step=preempt_after(7))
  assert sorted(losses(run)) == list(range(1, 8))
  train_and_evaluate(cfg, run)  # resumes from the step-6 checkpoint in the bucket
  got = losses(run)
  assert sorted(got) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in range(1, 9)], [local[s] for s in range(1, 9)],
                             rtol=1e-6)

  held = files.expand(f"{run}/**")
  names = {files.relpath(p, run).split("/")[0] for p in held}
  assert {"checkpoints", "metrics.jsonl", "tb"} <= names, names
  assert any("/profile/" in p and p.endswith(".xplane.pb") for p in held)
  steps = sorted(n for n in files.listdir(files.join(run, "checkpoints")) if n.isdigit())
  assert steps == ["4", "6", "8"]
  assert os.listdir(tmp_path) == []  # no `gs:` or `s3:` folder

  model, saved, step = load_run(run)
  assert step == 8 and saved.train.steps == 8


@pytest.mark.integration
def test_damaged_and_unfinished_steps_in_a_bucket(gs_url, corpus_glob, tmp_path, capfd):
  """The newest step cut short in the bucket is named, moved aside (STEP.damaged, kept) and the
  step before restored; the recomputed losses equal the first run's. A step without its commit
  file (a save cut short) is removed at the next start."""
  cfg = tiny_config(corpus_glob, **RESUMABLE_RUN)  # checkpoints 4, 6 and 8
  run = f"{gs_url}/{tmp_path.name}/run"
  train_and_evaluate(cfg, run)
  first = losses(run)
  data = files.join(run, "checkpoints", "8", "state", "ocdbt.process_0", "d")
  for obj in files.listdir(data):
    path = files.join(data, obj)
    if files.size(path) > 4096:
      files.write_bytes(path, files.read_range(path, 0, files.size(path) // 2))
  files.write_text(files.join(run, "checkpoints", "10", "state", "x"), "an unfinished save")
  capfd.readouterr()
  train_and_evaluate(cfg, run)
  err = capfd.readouterr().err
  assert "removed the unfinished checkpoint save(s) 10" in err, err
  assert f"warning: checkpoint step 8 in {run}/checkpoints does not restore (ValueError: " in err
  assert f"moved it aside to {run}/checkpoints/8.damaged (kept, never deleted) and restored " \
         "step 6" in err
  assert sorted(files.listdir(files.join(run, "checkpoints"))) == ["4", "6", "8", "8.damaged"]
  again = losses(run)
  np.testing.assert_allclose([again[s] for s in (7, 8)], [first[s] for s in (7, 8)], rtol=1e-6)
