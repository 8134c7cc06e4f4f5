"""Goodput: where a run's wall time went, across every process that trained it.

Each second of a training process belongs to exactly one part, on one clock: the part in force
changes only at the loop's boundaries, so the parts add up to the process's wall time by
construction, and what they split is measured, never derived as "the rest":
- startup: from the process's start (phd-train) or the call (a notebook) to the first step;
- restore: reading the checkpoint it resumes from;
- compile: every XLA compilation on the loop's thread (tracing, lowering, compiling or reading
  the persistent cache), as JAX reports it (jax.monitoring time spans, overlaps merged), taken
  out of whatever part it happened in: the first train step, a recompilation, validation's step;
- data: inside the session's next_batch (reading, host-to-device);
- checkpoint, validation, eval, log, profile, other: inside the hooks of that `part`;
- productive: the rest of the step loop; lost: the same for steps at or below the highest step an
  earlier process completed (computed again after a restart);
- summary: the end of the run (its summary, the sample).

JAX dispatches a step and returns before the device has run it, so a part is honest only if its
blocking calls wait for no training work. They do not: the divergence guard pulls the metrics
(waiting for every dispatched step, in the step's own part) whenever a hook is due, before the
hooks run; and at the first productive step after lost ones the loop waits for the lost steps
to finish before the part changes. So device time lands in productive (or lost), with no sync
added to an ordinary step.

The records live in WORKDIR/goodput/attempt-NNNN.json, one per process (process 0 writes it;
the other hosts account alike, unsaved): its host, pid, start, restored and last steps, lost
steps, status and seconds per part. A local workdir's record is rewritten (atomically, well under
a millisecond) after every step, so a process killed with -9 is known to its last step exactly;
in a bucket it is uploaded every log_every steps and at the end, so a kill loses at most that
many steps from its count (their time then counts as productive). A run's totals are the sum
over its records, logged as `time/<part>` (seconds, cumulative over the run) and `time/goodput`
(productive / total) in each metrics row, and printed as a table when a process finishes or is
preempted. Unseen from inside: a killed process's time after its last record, and the
interpreter's exit after the last one (module teardown: 1-3 s on a CPU).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import jax

from phd_jax import files as fs

PARTS = ("productive", "lost", "compile", "startup", "restore", "data", "checkpoint",
         "validation", "eval", "log", "profile", "summary", "other")
COMPILE_EVENTS = "/jax/core/compile/"  # trace, lowering and backend-compile spans
FIELDS = ("attempt", "host", "pid", "started", "restored_step", "last_step", "lost_steps",
          "status", "seconds")  # of a record
_clocks: weakref.WeakSet = weakref.WeakSet()  # the live clocks, fed by one span listener


def process_start() -> float:
  """The unix time this process started (Linux: /proc, to 10 ms); elsewhere now."""
  try:
    with open("/proc/self/stat") as f:
      ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, since boot
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
  except (OSError, ValueError, IndexError):
    return time.time()


@functools.cache
def _listen() -> None:
  """JAX's compilation spans, to the live clocks: one listener per process, added by the first
  clock (never at import)."""
  jax.monitoring.register_event_time_span_listener(_on_span)


def _on_span(event: str, start: float, end: float, **_) -> None:
  if event.startswith(COMPILE_EVENTS):
    for clock in list(_clocks):
      if clock.thread == threading.get_ident():
        clock.spans.append((start, end))


def union_seconds(spans: list[tuple[float, float]]) -> float:
  """The time covered by the spans (nested and overlapping ones counted once)."""
  total, reach = 0.0, float("-inf")
  for start, end in sorted(spans):
    if end > reach:
      total += end - max(start, reach)
      reach = end
  return total


class Clock:
  """One process's wall time, split into PARTS; its records in the workdir once `open`."""

  def __init__(self, started: float | None = None, now: Callable[[], float] = time.monotonic):
    """`started`: the unix time the accounting begins (process_start() for a command); None:
    now. The time before this call counts as startup."""
    self.now, self.t = now, now()
    self.seconds = dict.fromkeys(PARTS, 0.0)
    self.seconds["startup"] = max(0.0, time.time() - started) if started else 0.0
    self.base, self.stack = "startup", []
    self.thread, self.spans = threading.get_ident(), []
    _listen()
    _clocks.add(self)
    self.record: dict = {"attempt": 0, "host": socket.gethostname(), "pid": os.getpid(),
                         "started": time.time() - self.seconds["startup"], "restored_step": 0,
                         "last_step": 0, "lost_steps": 0, "status": "running"}
    self.history: list[dict] = []  # the earlier processes' records
    self.path, self.say, self.persist_every = None, lambda *a, **k: None, 1
    self.done_before = 0  # the highest step an earlier process completed

  # ----- the parts -----
  def _settle(self) -> None:
    """Adds the time since the last change to the part in force, less the compilation in it."""
    t = self.now()
    elapsed, self.t = t - self.t, t
    moved = min(elapsed, union_seconds(self.spans))
    self.spans.clear()
    self.seconds[self.stack[-1] if self.stack else self.base] += elapsed - moved
    self.seconds["compile"] += moved

  @contextlib.contextmanager
  def part(self, name: str) -> Iterator[None]:
    """The block's time goes to `name` (nested parts: the innermost; a name not in PARTS:
    other)."""
    self._settle()
    self.stack.append(name if name in self.seconds else "other")
    try:
      yield
    finally:
      self._settle()
      self.stack.pop()

  def step(self, step: int, state) -> None:
    """Ahead of the train step `step`: productive, or lost if an earlier process did it."""
    lost = step <= self.done_before
    if not lost and self.base == "lost":
      jax.block_until_ready(state)  # the lost steps' device time stays lost (once per process)
    self._settle()
    self.base = "lost" if lost else "productive"

  def finish(self) -> None:
    """Behind the step loop: the rest is the run's summary."""
    self._settle()
    self.base = "summary"

  def done(self, step: int) -> None:
    """Behind the train step `step`: its progress recorded before anything can end the process."""
    self.record["last_step"] = step
    self.record["lost_steps"] += step <= self.done_before
    if step % self.persist_every == 0:
      self.save()

  # ----- the records -----
  def open(self, workdir: str, start: int, chief: bool, say: Callable[..., None] = print,
           persist_every: int = 1) -> None:
    """Reads the earlier processes' records and writes this one's (process 0 only); `start`:
    the step restored. `persist_every`: 1 locally, log_every for a bucket."""
    self.say, self.persist_every = say, 1 if not fs.is_url(workdir) else persist_every
    if not chief:
      return
    folder = fs.join(workdir, "goodput")
    self.history = read_records(folder)
    self.done_before = max((r["last_step"] for r in self.history), default=0)
    attempt = max((r["attempt"] for r in self.history), default=0) + 1
    self.path = fs.join(folder, f"attempt-{attempt:04d}.json")
    self.record.update(attempt=attempt, restored_step=start, last_step=start)
    self.save()

  def snapshot(self) -> dict:
    """This process's record with its seconds up to now."""
    self._settle()
    return {**self.record, "updated": time.time(), "seconds": dict(self.seconds)}

  def save(self) -> None:
    if self.path:
      with self.part("log"):
        data = json.dumps(self.snapshot())
        with fs.atomic_open(self.path) as f:
          f.write(data)

  def fields(self) -> dict:
    """The run's totals so far, for a metrics row: time/<part> seconds and time/goodput."""
    totals = run_totals([*self.history, self.snapshot()])
    return {**{f"time/{p}": s for p, s in totals["seconds"].items()},
            "time/total": totals["total"], "time/goodput": totals["goodput"],
            "lost_steps": totals["lost_steps"]}

  def close(self, status: str) -> None:
    """At the process's end: the record's last write and the run's table."""
    self.record["status"] = status
    self.save()
    self.say(table([*self.history, self.snapshot()]))
    _clocks.discard(self)


def read_records(folder: str) -> list[dict]:
  """The records in WORKDIR/goodput, by attempt; one that does not read is named and skipped
  (it never stops a run: the accounting is a report, not the training)."""
  if not fs.isdir(folder):
    return []
  records = []
  for name in sorted(fs.listdir(folder)):
    if name.startswith("attempt-") and name.endswith(".json"):
      try:
        record = json.loads(fs.read_text(fs.join(folder, name)))
        if missing := [f for f in FIELDS if f not in record]:
          raise ValueError(f"no {', '.join(missing)}")
        records.append(record)
      except (OSError, ValueError) as e:
        print(f"warning: goodput record {fs.join(folder, name)} does not read ({e}); its "
              "time is left out of the run's accounting", file=sys.stderr, flush=True)
  return sorted(records, key=lambda r: r["attempt"])


def run_totals(records: list[dict]) -> dict:
  """Seconds per part summed over the records, their total, goodput and lost steps."""
  seconds = {p: sum(r["seconds"].get(p, 0.0) for r in records) for p in PARTS}
  total = sum(seconds.values())
  return {"seconds": seconds, "total": total,
          "goodput": seconds["productive"] / total if total else 0.0,
          "lost_steps": sum(r.get("lost_steps", 0) for r in records)}


def table(records: list[dict]) -> str:
  """Where the run's time went: each part's seconds and share, then each process's line."""
  totals = run_totals(records)
  total = totals["total"] or 1.0
  lines = [f"----- time of the run ({len(records)} process(es)): goodput "
           f"{totals['goodput']:.1%} -----", f"{'part':<12}{'seconds':>10}{'share':>9}"]
  for part, s in sorted(totals["seconds"].items(), key=lambda kv: -kv[1]):
    note = (f"  ({totals['lost_steps']} step(s) computed again after a restart)"
            if part == "lost" and totals["lost_steps"] else "")
    if s >= 0.05 or part in ("productive", "lost"):
      lines.append(f"{part:<12}{s:>10.1f}{s / total:>9.1%}{note}")
  lines.append(f"{'total':<12}{totals['total']:>10.1f}{1:>9.1%}")
  for i, r in enumerate(records):
    status = r["status"]
    if status == "running" and i < len(records) - 1:
      status = "ended without a last record (killed or failed)"
    lines.append(f"attempt {r['attempt']} ({r['host']} pid {r['pid']}): restored step "
                 f"{r['restored_step']}, last step {r['last_step']}, {r['lost_steps']} lost, "
                 f"{sum(r['seconds'].values()):.1f} s, {status}")
  return "\n".join(lines + ["-" * 20])
