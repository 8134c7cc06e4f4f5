"""Damaged checkpoints and failed saves, on real files: the newest step cut short, corrupt or
missing an item is skipped (named, moved aside by training, left in place by the read-only
commands), the run resumes from the step before and recomputes the same losses; a save that hits
a storage error ends the command with one `error:` line and the next start cleans up after it."""
import os
import shutil
import sys

import pytest

from phd_jax.checkpoints.checkpoint import Checkpointer, saved_run_config
from phd_jax.checkpoints.load import load_run
from phd_jax.train.loop import train_and_evaluate
from phd_jax.train.setup import start_session
from tests import commands
from tests.helpers import RESUMABLE_RUN, cut_short, losses, tiny_config, tiny_flags
from tests.shared import copy_run

pytestmark = pytest.mark.integration

def _config(corpus_glob):
  return tiny_config(corpus_glob, **RESUMABLE_RUN)


@pytest.fixture
def trained(corpus_glob, trained_runs):
  """A run trained straight to step 8: checkpoints 4, 6, 8 and the losses of every step."""
  workdir = trained_runs(_config(corpus_glob))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6", "8"]
  return workdir


@pytest.fixture
def run_copy(trained, tmp_path):
  return copy_run(trained, tmp_path / "run")


def _cut_short(workdir, step):
  cut_short(workdir / "checkpoints" / str(step))


def _listing(workdir):
  return sorted(str(p.relative_to(workdir)) for p in (workdir / "checkpoints").rglob("*"))


def test_cut_short_newest_step_is_moved_aside_and_the_rerun_recomputes_the_same_losses(
    corpus_glob, trained, run_copy, capfd):
  _cut_short(run_copy, 8)
  damaged = _listing(run_copy)
  train_and_evaluate(_config(corpus_glob), str(run_copy))
  out, err = capfd.readouterr()
  directory = run_copy / "checkpoints"
  assert (f"warning: checkpoint step 8 in {directory} does not restore (ValueError: OUT_OF_RANGE"
          in err), err
  assert f"moved it aside to {directory / '8.damaged'} (kept, never deleted) and restored step 6" \
      in err
  assert f"resumed from step 6 in {run_copy}" in out and "done: steps=8" in out
  # The damaged step is kept as it was; a fresh step 8 took its place.
  assert sorted(os.listdir(directory)) == ["4", "6", "8", "8.damaged"]
  assert [p.replace("8.damaged", "8", 1) for p in _listing(run_copy) if "8.damaged" in p] \
      == [p for p in damaged if p.startswith("checkpoints/8")]
  first, rerun = losses(trained), losses(run_copy)
  assert sorted(rerun) == list(range(1, 9))
  assert [rerun[s] for s in (7, 8)] == [first[s] for s in (7, 8)]  # resume is exact
  assert load_run(str(run_copy))[2] == 8  # the new step 8 loads


def _rm_config(step_dir):
  shutil.rmtree(step_dir / "config")


def _garbage_config(step_dir):
  (step_dir / "config" / "metadata").write_text("{not json")


def _garbage_state_metadata(step_dir):
  (step_dir / "state" / "_METADATA").write_text("\x00garbage")


def _rm_state(step_dir):
  shutil.rmtree(step_dir / "state")


@pytest.mark.parametrize("damage, reason", [
    (_rm_config, 'KeyError: Item "config" was not found'),
    (_garbage_config, "JSONDecodeError"),
    (_garbage_state_metadata, "JSONDecodeError"),
    (_rm_state, 'KeyError: Item "state" was not found'),
])
def test_corrupt_or_missing_items_fall_back_to_the_step_before(corpus_glob, run_copy, capfd,
                                                               damage, reason):
  damage(run_copy / "checkpoints" / "8")
  if damage is _garbage_config:  # phd-train without --config reads the newest config that loads
    assert saved_run_config(str(run_copy)).train.steps == 8
  run = start_session(_config(corpus_glob), str(run_copy))
  run.ckpt.close()
  err = capfd.readouterr().err
  assert f"warning: checkpoint step 8 in {run_copy / 'checkpoints'} does not restore ({reason}" \
      in err, err
  assert run.start == 6 and "restored step 6" in err
  assert sorted(os.listdir(run_copy / "checkpoints")) == ["4", "6", "8.damaged"]
  ckpt = Checkpointer(str(run_copy), 3)
  assert list(ckpt.manager.all_steps()) == [4, 6]  # orbax lists no STEP.damaged folder
  ckpt.close()


def test_a_second_damage_of_the_same_step_gets_its_own_name(corpus_glob, run_copy, capfd):
  (run_copy / "checkpoints" / "8.damaged").mkdir()  # an earlier damaged step 8, still kept
  _cut_short(run_copy, 8)
  run = start_session(_config(corpus_glob), str(run_copy))
  run.ckpt.close()
  assert run.start == 6 and "8.damaged.1 (kept" in capfd.readouterr().err
  assert sorted(os.listdir(run_copy / "checkpoints")) == ["4", "6", "8.damaged", "8.damaged.1"]


def test_no_step_restores_one_error_and_nothing_moved(corpus_glob, run_copy):
  for step in (4, 6, 8):
    _cut_short(run_copy, step)
  before = _listing(run_copy)
  with pytest.raises(ValueError, match=r"no checkpoint in .* restores: step 8: ValueError: "
                     r"OUT_OF_RANGE.*; step 6: .*; step 4: .*Nothing was moved or deleted"):
    train_and_evaluate(_config(corpus_glob), str(run_copy))
  assert _listing(run_copy) == before
  cli = commands.phd("phd-generate", f"--workdir={run_copy}", "--max_new_tokens=2", expect=1)
  assert "Traceback" not in cli.stderr, cli.stderr[-3000:]
  last = cli.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: no checkpoint in {run_copy / 'checkpoints'} restores: step 8")
  assert _listing(run_copy) == before


def test_read_only_commands_use_the_newest_step_that_loads_and_move_nothing(run_copy):
  _cut_short(run_copy, 8)
  before = _listing(run_copy)
  said = []
  _, cfg, step = load_run(str(run_copy), log=said.append)
  assert step == 6 and cfg.train.steps == 8 and len(said) == 1
  assert said[0].startswith(f"warning: checkpoint step 8 in {run_copy / 'checkpoints'} does not "
                            "restore (ValueError: OUT_OF_RANGE")
  assert said[0].endswith("using step 6 instead (left in place: the next phd-train run moves it "
                          "aside)")
  cli = commands.phd("phd-generate", f"--workdir={run_copy}", "--max_new_tokens=2",
                     "--temperature=0")
  assert "Traceback" not in cli.stderr, cli.stderr[-3000:]
  assert f"# {run_copy}, checkpoint step 6" in cli.stdout
  (line,) = cli.stderr.splitlines()  # the same warning, alone on stderr (its reason names
  assert line.split(" (")[0] == said[0].split(" (")[0]  # the first read that failed: any one)
  assert line.endswith("using step 6 instead (left in place: the next phd-train run moves it "
                       "aside)")
  assert _listing(run_copy) == before


def _train_cli(workdir, corpus_glob, steps):
  return [commands.installed("phd-train"), f"--workdir={workdir}",
          *tiny_flags(corpus_glob, **{**RESUMABLE_RUN, "steps": steps})]


# Runs a command with files limited to 64 KiB (a write past it fails with EFBIG, as on a full
# disk: small files such as metrics, configs and metadata fit, a checkpoint's array data does not).
SMALL_FILE_SIZE_LIMIT = [sys.executable, "-c", "import os, resource, signal, sys; "
                         "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                         "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)); "
                         "os.execv(sys.argv[1], sys.argv[1:])"]


def test_a_save_failing_for_storage_ends_with_one_error_line_and_the_next_start_cleans_up(
    corpus_glob, run_copy):
  directory = run_copy / "checkpoints"
  failed = commands.run(SMALL_FILE_SIZE_LIMIT + _train_cli(run_copy, corpus_glob, 10), expect=1)
  assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
  errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
  assert errors == [failed.stderr.strip().splitlines()[-1]]
  assert errors[0].startswith(f"error: could not save the checkpoint of step 10 in {directory}: "
                              "File too large (EFBIG); the earlier checkpoints are intact "
                              "(newest: step 8)"), errors
  assert sorted(os.listdir(directory)) == ["10.orbax-checkpoint-tmp", "4", "6", "8"]
  assert load_run(str(run_copy), log=pytest.fail)[2] == 8  # the earlier steps are intact

  rerun = commands.run(_train_cli(run_copy, corpus_glob, 10))
  assert (f"note: removed the unfinished checkpoint save(s) 10.orbax-checkpoint-tmp from "
          f"{directory}") in rerun.stderr
  assert "resumed from step 8" in rerun.stdout and "done: steps=10" in rerun.stdout
  assert sorted(os.listdir(directory)) == ["10", "6", "8"]
