"""Goodput accounting (phd_jax/train/goodput.py): the clock's parts, compilation taken out of
them, lost steps across processes, the records, the totals and the table; and a run killed with
-9 and rerun, whose parts add up to each process's wall time measured from outside."""
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import psutil
import pytest

from phd_jax.train import goodput
from phd_jax.train.metrics import read_log
from tests import commands
from tests.helpers import tiny_flags

HERE = os.path.dirname(os.path.abspath(__file__))


class FakeTime:
  def __init__(self):
    self.t = 100.0

  def __call__(self) -> float:
    return self.t


def test_parts_split_the_clock_nested_blocks_count_once():
  now, state = FakeTime(), jnp.zeros(())
  clock = goodput.Clock(now=now)
  now.t += 1.0  # startup
  with clock.part("data"):
    now.t += 2.0
    with clock.part("checkpoint"):  # the innermost part gets the time
      now.t += 0.5
    now.t += 0.25
  clock.step(1, state)
  now.t += 4.0  # the step's own time: productive (nothing done before)
  with clock.part("no such part"):
    now.t += 0.125
  clock.done(1)
  s = clock.snapshot()["seconds"]
  assert (s["startup"], s["data"], s["checkpoint"], s["productive"], s["other"]) == \
      (1.0, 2.25, 0.5, 4.0, 0.125)
  assert sum(s.values()) == pytest.approx(now.t - 100.0)
  assert clock.record["last_step"] == 1 and clock.record["lost_steps"] == 0


def test_started_counts_the_time_before_the_clock_as_startup():
  clock = goodput.Clock(started=time.time() - 5.0)
  assert 5.0 <= clock.snapshot()["seconds"]["startup"] < 6.0


def test_union_seconds_counts_nested_and_overlapping_spans_once():
  assert goodput.union_seconds([]) == 0.0
  assert goodput.union_seconds([(0, 10), (2, 3), (9, 12), (20, 21)]) == 13.0
  assert goodput.union_seconds([(5, 6), (0, 1)]) == 2.0


def test_compilation_is_taken_out_of_the_part_it_happened_in():
  x = jnp.arange(7.0)
  f = jax.jit(lambda v: jnp.cumsum(jnp.sin(v) * 3.0 + 17.0))  # a program no other test has
  clock = goodput.Clock()
  t0 = time.monotonic()
  with clock.part("validation"):
    f(x).block_until_ready()
  elapsed = time.monotonic() - t0
  s = dict(clock.snapshot()["seconds"])
  assert s["compile"] > 0.0
  assert s["compile"] + s["validation"] == pytest.approx(elapsed, abs=0.01)
  with clock.part("validation"):
    f(x).block_until_ready()  # cached: nothing compiles
  assert clock.snapshot()["seconds"]["compile"] == s["compile"]


def test_steps_an_earlier_process_did_are_lost_and_records_say_who_did_what(tmp_path, capsys):
  state = jnp.zeros(())
  first = goodput.Clock()
  first.open(str(tmp_path), 0, chief=True, say=print)
  for step in range(1, 6):
    first.step(step, state)
    first.done(step)  # then "killed": no close
  second = goodput.Clock()
  second.open(str(tmp_path), 3, chief=True, say=print)  # restored the step-3 checkpoint
  assert second.done_before == 5
  for step in range(4, 9):
    second.step(step, state)
    assert second.base == ("lost" if step <= 5 else "productive")
    second.done(step)
  second.close("finished")
  records = goodput.read_records(str(tmp_path / "goodput"))
  assert [(r["attempt"], r["pid"], r["restored_step"], r["last_step"], r["lost_steps"],
           r["status"]) for r in records] == [(1, os.getpid(), 0, 5, 0, "running"),
                                              (2, os.getpid(), 3, 8, 2, "finished")]
  out = capsys.readouterr().out
  assert "(2 step(s) computed again after a restart)" in out
  assert "attempt 1 (" in out and "ended without a last record (killed or failed)" in out
  fields = second.fields()
  assert fields["lost_steps"] == 2 and 0 < fields["time/goodput"] <= 1
  saved = sum(sum(r["seconds"].values()) for r in records)
  assert saved <= fields["time/total"] < saved + 0.1  # and the time since the last save


def test_a_bucket_workdir_is_recorded_every_log_every_steps_and_at_the_end(gs_url, tmp_path):
  workdir, state = f"{gs_url}/{tmp_path.name}", jnp.zeros(())
  clock = goodput.Clock()
  clock.open(workdir, 0, chief=True, say=print, persist_every=4)
  seen = []
  for step in range(1, 7):
    clock.step(step, state)
    clock.done(step)
    seen.append(goodput.read_records(f"{workdir}/goodput")[0]["last_step"])
  assert seen == [0, 0, 0, 4, 4, 4]
  clock.close("finished")
  [record] = goodput.read_records(f"{workdir}/goodput")
  assert (record["last_step"], record["status"]) == (6, "finished")


def test_totals_and_table_of_records():
  records = [
      {"attempt": 1, "host": "a", "pid": 1, "restored_step": 0, "last_step": 5, "lost_steps": 0,
       "status": "running", "seconds": {"productive": 6.0, "compile": 2.0, "startup": 2.0}},
      {"attempt": 2, "host": "b", "pid": 2, "restored_step": 3, "last_step": 8, "lost_steps": 2,
       "status": "finished", "seconds": {"productive": 4.0, "lost": 4.0, "restore": 2.0}}]
  totals = goodput.run_totals(records)
  assert totals["total"] == 20.0 and totals["goodput"] == 0.5 and totals["lost_steps"] == 2
  assert totals["seconds"]["productive"] == 10.0 and totals["seconds"]["eval"] == 0.0
  text = goodput.table(records)
  assert "goodput 50.0%" in text
  assert re.search(r"^lost +4\.0 +20\.0% +\(2 step\(s\) computed again", text, re.M), text
  assert re.search(r"^total +20\.0 +100\.0%", text, re.M), text
  assert "attempt 2 (b pid 2): restored step 3, last step 8, 2 lost, 10.0 s, finished" in text
  assert "eval" not in text  # parts with no time are left out


def test_a_record_that_does_not_read_is_named_and_left_out(tmp_path, capsys):
  folder = tmp_path / "goodput"
  clock = goodput.Clock()
  clock.open(str(tmp_path), 0, chief=True, say=print)  # attempt-0001.json
  (folder / "attempt-0002.json").write_text('{"attempt": 2, "seconds"')  # torn
  (folder / "attempt-0003.json").write_text(json.dumps({"attempt": 3, "last_step": 4}))
  assert [r["attempt"] for r in goodput.read_records(str(folder))] == [1]
  err = capsys.readouterr().err
  assert f"goodput record {folder}/attempt-0002.json does not read" in err
  assert f"{folder}/attempt-0003.json does not read (no host, pid, started, restored_step" in err


def test_process_start_is_the_process_creation_time():
  assert goodput.process_start() == pytest.approx(psutil.Process().create_time(), abs=1.5)


def _timed(run):
  t0 = time.time()
  done = run()
  return done, time.time() - t0


def _table(stdout: str) -> dict:
  """{part: seconds} of the table the run printed last, with 'lost_steps' and 'goodput'."""
  text = stdout[stdout.rindex("----- time of the run"):]
  parts = {m[1]: float(m[2]) for m in re.finditer(r"^(\w+) +([\d.]+) +[\d.]+%", text, re.M)}
  lost = re.search(r"^lost .*\((\d+) step\(s\) computed again after a restart\)", text, re.M)
  parts["lost_steps"] = int(lost[1]) if lost else 0
  parts["goodput"] = float(re.search(r"goodput ([\d.]+)%", text)[1]) / 100
  return parts


@pytest.mark.integration
def test_kill_9_and_a_rerun_count_the_lost_steps_and_add_up_to_the_wall_time(corpus_glob,
                                                                            tmp_path):
  train = dict(steps=8, checkpoint_every=3, keep_checkpoints=3)  # checkpoints 3 and 6
  workdir, kill_at = tmp_path / "run", 5
  killed, killed_wall = _timed(lambda: commands.script(
      os.path.join(HERE, "goodput_worker.py"), corpus_glob, str(workdir), str(kill_at), "3",
      json.dumps(train), expect=None, timeout=600))
  assert killed.returncode == -9, killed.stderr[-3000:]
  rerun_started = time.time()
  rerun, rerun_wall = _timed(lambda: commands.phd(
      "phd-train", f"--workdir={workdir}", *tiny_flags(corpus_glob, **train), timeout=600))
  assert "resumed from step 3 in" in rerun.stdout
  first, second = goodput.read_records(str(workdir / "goodput"))
  assert (first["last_step"], first["status"]) == (kill_at, "running")
  assert (second["restored_step"], second["last_step"], second["status"]) == (3, 8, "finished")
  assert second["lost_steps"] == kill_at - 3
  inside = [sum(r["seconds"].values()) for r in (first, second)]
  for record, seconds, wall in zip((first, second), inside, (killed_wall, rerun_wall)):
    assert seconds <= wall + 0.05, (record, wall)  # nothing counted twice (the start: +-10 ms)
    assert record["seconds"]["compile"] > 0 and record["seconds"]["productive"] > 0
  # The run's wall time, measured from outside (the killed process from its start to the kill,
  # the rerun from its start to its record's last write, at the run's end), against its parts
  # measured inside. They miss the killed process's time after its last record. Left out: the
  # rerun's interpreter exit after the run ended (module teardown, 1-3 s on a loaded CPU, 5% of
  # this short run), counted above (nothing counted twice) but no part of the run.
  rerun_run_wall = second["updated"] - rerun_started
  assert rerun_run_wall <= rerun_wall
  assert sum(inside) == pytest.approx(killed_wall + rerun_run_wall, rel=0.05)
  assert second["seconds"]["lost"] > 0 and second["seconds"]["restore"] > 0

  table = _table(rerun.stdout)
  assert table["lost_steps"] == kill_at - 3 and table["lost"] > 0
  assert 0 < table["goodput"] <= 1
  total = sum(sum(r["seconds"].values()) for r in (first, second))
  assert table["total"] == pytest.approx(total, abs=0.1)

  rows = [r for r in read_log(str(workdir)) if "loss" in r]
  assert [r["step"] for r in rows] == list(range(1, 9))
  for r in rows:
    assert {"time/productive", "time/compile", "time/lost", "time/data", "time/checkpoint",
            "time/total"} <= set(r) and 0 < r["time/goodput"] <= 1
  assert [r["lost_steps"] for r in rows] == [0, 0, 0, 1, 2, 2, 2, 2]
  assert rows[-1]["time/lost"] > 0
  totals = [r["time/total"] for r in rows]
  assert totals == sorted(totals) and totals[3] > sum(first["seconds"].values())
