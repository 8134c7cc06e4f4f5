"""Two checkpoint tiers (phd_jax/checkpoints/tiers.py): a run killed after a node-local save
resumes from it with the losses of an uninterrupted run; without its node-local folder (a replaced
host) it resumes from the workdir; a damaged node-local step falls back; a bucket workdir works
with a node-local tier; the new config fields are checked; the rules, on their own."""
import glob
import os

import numpy as np
import pytest

from configs import model_tiny
from phd_jax import files
from phd_jax.checkpoints import tiers
from phd_jax.config import validate_config
from phd_jax.data.tokenizers import ByteTokenizer
from phd_jax.train.loop import train_and_evaluate
from tests import commands
from tests.checkpoints.tier_worker import tier_config
from tests.helpers import RESUMABLE_RUN, Preempted, cut_short, losses, preempt_after, tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def straight(corpus_glob, trained_runs):
  """The losses of the same 8 steps trained without a stop (a run shared with other tests)."""
  return losses(trained_runs(tiny_config(corpus_glob, **RESUMABLE_RUN)))


def _steps(folder) -> list[int]:
  return sorted(int(n) for n in files.listdir(str(folder)) if n.isdigit())


def _local_steps(local_dir) -> list[int]:
  found = glob.glob(os.path.join(local_dir, "*", "checkpoints"))
  assert len(found) == 1, found  # the run's one folder
  return _steps(found[0])


def _same_losses(got: dict, want: dict, steps) -> None:
  assert sorted(got) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in steps], [want[s] for s in steps], rtol=1e-6)


def _cut(workdir, local_dir, cfg, step: int) -> None:
  """Trains `cfg` in this process and stops it after `step` (its saves complete)."""
  with pytest.raises(Preempted):
    train_and_evaluate(cfg, str(workdir), on_step=preempt_after(step))


@pytest.mark.integration
def test_kill_9_after_a_local_save_resumes_from_it_with_the_same_losses(
    corpus_glob, straight, tmp_path, capfd):
  workdir, local = tmp_path / "run", str(tmp_path / "local")
  killed = commands.script(os.path.join(HERE, "tier_worker.py"), corpus_glob, workdir, local, 7,
                           expect=None, timeout=600)
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert _steps(workdir / "checkpoints") == [4] and _local_steps(local) == [3, 6]
  capfd.readouterr()
  train_and_evaluate(tier_config(corpus_glob, local), str(workdir))
  out = capfd.readouterr().out
  folder = tiers.run_folder(local, str(workdir))
  assert f"resumed from step 6 in {workdir} (its node-local checkpoint in {folder}" in out, out
  _same_losses(losses(workdir), straight, (7, 8))
  assert _steps(workdir / "checkpoints") == [4, 8]  # the workdir stays the run's record


@pytest.mark.integration
def test_without_its_local_folder_a_run_resumes_from_the_workdir(corpus_glob, straight, tmp_path,
                                                                 capfd):
  workdir, local = tmp_path / "run", str(tmp_path / "local")
  cfg = tier_config(corpus_glob, local)
  _cut(workdir, local, cfg, 7)
  assert _local_steps(local) == [3, 6]
  files.rmtree(local)  # a replaced host: the node-local disk is new
  capfd.readouterr()
  train_and_evaluate(cfg, str(workdir))
  assert f"resumed from step 4 in {workdir} (its workdir checkpoint" in capfd.readouterr().out
  _same_losses(losses(workdir), straight, (5, 6, 7, 8))
  assert _local_steps(local) == [6]  # saved again on the way


@pytest.mark.integration
@pytest.mark.parametrize("damaged, resumed", [((7,), 6), ((6, 7), 4)])
def test_a_damaged_local_step_falls_back(corpus_glob, straight, tmp_path, capfd, damaged,
                                         resumed):
  """Node-local steps 6 and 7, the workdir's 4: a damaged 7 falls back to 6; both, to 4."""
  workdir, local = tmp_path / "run", str(tmp_path / "local")
  cfg = tier_config(corpus_glob, local, local_checkpoint_every=1)
  _cut(workdir, local, cfg, 7)
  folder = tiers.run_folder(local, str(workdir))
  assert _local_steps(local) == [6, 7]
  for step in damaged:
    cut_short(os.path.join(folder, "checkpoints", str(step)))
  capfd.readouterr()
  train_and_evaluate(cfg, str(workdir))
  out, err = capfd.readouterr()
  for step in damaged:
    assert f"warning: checkpoint step {step} in {folder}/checkpoints does not restore" in err, err
    assert f"moved it aside to {folder}/checkpoints/{step}.damaged" in err
  tier = "node-local" if resumed == 6 else "workdir"
  assert f"resumed from step {resumed} in {workdir} (its {tier} checkpoint" in out, out
  _same_losses(losses(workdir), straight, range(resumed + 1, 9))


@pytest.mark.integration
def test_a_bucket_workdir_with_a_local_tier_saves_to_both_and_resumes(
    gs_url, corpus_glob, straight, tmp_path, capfd):
  run, local = f"{gs_url}/{tmp_path.name}/run", str(tmp_path / "local")
  cfg = tier_config(corpus_glob, local)
  _cut(run, local, cfg, 7)
  assert _steps(files.join(run, "checkpoints")) == [4] and _local_steps(local) == [3, 6]
  capfd.readouterr()
  train_and_evaluate(cfg, run)
  assert f"resumed from step 6 in {run} (its node-local checkpoint" in capfd.readouterr().out
  _same_losses(losses(run), straight, range(1, 9))  # metrics.jsonl in the bucket: every row
  assert _steps(files.join(run, "checkpoints")) == [4, 8]
  assert files.exists(files.join(run, tiers.KEY_FILE))


@pytest.mark.parametrize("fields, field, says", [
    (dict(local_checkpoint_every=-1), "local_checkpoint_every", "expected an int >= 0"),
    (dict(local_checkpoint_every=5), "local_checkpoint_dir", "required when"),
    (dict(local_checkpoint_every=5, local_checkpoint_dir="gs://b/ckpt"), "local_checkpoint_dir",
     "not a bucket URL"),
    (dict(local_checkpoint_every=5, local_checkpoint_dir="s3://b/ckpt"), "local_checkpoint_dir",
     "not a bucket URL"),
    (dict(keep_local_checkpoints=0), "keep_local_checkpoints", "expected an int >= 1"),
])
def test_bad_local_tier_fields_are_refused_by_name(fields, field, says):
  cfg = model_tiny.get_config()
  cfg.train.update(fields)
  with pytest.raises(ValueError, match=rf"config\.train\.{field}=.*{says}"):
    validate_config(cfg, ByteTokenizer.vocab_size)


def test_defaults_leave_the_local_tier_off():
  t = model_tiny.get_config().train
  assert (t.local_checkpoint_every, t.local_checkpoint_dir, t.keep_local_checkpoints) == (0, "", 2)
  assert not any(tiers.local_due(t, s, False) for s in range(1, 30))


def test_local_saves_skip_the_workdirs_steps_and_stops():
  t = tiny_config("", steps=12, checkpoint_every=4, local_checkpoint_every=2).train
  assert [s for s in range(1, 13) if tiers.local_due(t, s, False)] == [2, 6, 10]
  assert not tiers.local_due(t, 6, True)  # a preemption stop saves to the workdir


def test_a_local_step_counts_only_when_every_host_holds_it():
  rows = np.array([[9, 6, 3, -1], [6, 3, -1, -1], [12, 9, 6, 3]], np.int32)  # 3 hosts
  assert tiers.newest_common(rows) == [6, 3]
  assert tiers.newest_common(np.array([[6, -1], [-1, -1]], np.int32)) == []  # a new host


def test_runs_sharing_a_local_folder_never_share_steps(tmp_path):
  local, a, b = str(tmp_path / "local"), tmp_path / "a", tmp_path / "b"
  a.mkdir()
  b.mkdir()
  first = tiers.run_folder(local, str(a))
  assert tiers.run_folder(local, str(a)) == first  # a restart of the run finds it
  assert tiers.run_folder(local, str(b)) != first  # another run beside it
  assert open(os.path.join(first, "workdir.txt")).read() == f"{a}\n"
  os.remove(a / tiers.KEY_FILE)  # the workdir deleted and made again: a new run
  assert tiers.run_folder(local, str(a)) != first
