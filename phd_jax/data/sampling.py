"""Which window of which source fills each row of each training batch: a pure index function of
(seed, step, row), read through grain.

A function rather than a stateful sampler, so that every host computes the same global batch
without talking to the others, a run resumed on any number of hosts or devices continues the same
stream, and `phd-data` shows the windows of any step without replaying the steps before it.

  - Shares. The schedule cuts the batches into phases of constant weights. In a phase that began
    j batches ago, sources 0..i together have had floor(j * B * F_i) rows, F_i the cumulative
    share of sources 0..i (exact rational arithmetic). So every source's share of any span of
    batches is its weight / total weight to within one window, without sampling noise, and a
    source's position (windows given out so far) at any batch is a sum over the phases.
  - Rows. A batch's n_i windows of source i are spread evenly over its rows (row keys (k + 1/2) /
    n_i), so each host's slice and each microbatch carries the mixture too.
  - Windows. The p-th window a source gives out is window index_shuffle(p mod L, seed + p div L)
    of its L windows: grain's MapDataset.shuffle(seed).repeat(), i.e. a new order each epoch. A
    mixture of one source is therefore exactly the grain pipeline the training loop used before.

The position the run has reached is its batch index; a checkpoint (get_state) also holds the
anchor the positions are counted from, so a run resumed with a changed mixture continues every
source where it was (set_state says what changed).
"""
from __future__ import annotations

import copy
import functools
import json
import sys
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import grain
import numpy as np

FORMAT = "phd_jax.data_position/1"
SEED_STRIDE = 1 << 20  # source k of several shuffles with seed + k * SEED_STRIDE (+ its epoch)
# Batches read ahead: one per grain read thread (16), so a bucket's windows still load 16 batches
# at once. grain's default buffer (500 elements) is 500 batches here, since the elements are
# batches: up to gigabytes on a pod host, and in a tiny 4-step run 4,000 windows read ahead whose
# threads' GIL hand-offs cost the training loop over a second of CPU (4.4-5.0 s per run with
# 500, 3.2-3.7 s with 16, the programs' compilations cached).
READ = grain.ReadOptions(num_threads=16, prefetch_buffer_size=16)


class Anchor(NamedTuple):
  """Where the positions are counted from: a batch index and each source's position and seed."""
  batch: int
  positions: tuple[int, ...]
  seeds: tuple[int, ...]


class Plan:
  """The index function of a mixture: counts per batch, rows, windows.

  `weights`: the base weights, one per source; `schedule`: (step, weights) pairs, the weights
  used from that (1-based) step on, steps increasing; `lengths`: windows per source (an epoch).
  """

  def __init__(self, names: Sequence[str], lengths: Sequence[int], weights: Sequence[float],
               schedule: Sequence[tuple[int, Sequence[float]]], batch_size: int, seed: int,
               anchor: Anchor | None = None):
    self.names, self.lengths = tuple(names), tuple(int(n) for n in lengths)
    self.batch_size, self.seed = batch_size, seed
    self.changes = [(0, _cumulative(weights))] + [(step - 1, _cumulative(w))
                                                  for step, w in schedule]
    self.anchor = anchor or Anchor(0, (0,) * len(names), initial_seeds(seed, len(names)))
    self.assign = functools.lru_cache(maxsize=64)(self._assign)  # grain threads share it

  def from_anchor(self, anchor: Anchor) -> Plan:
    """The same plan, its positions counted from `anchor` (a resumed, changed mixture)."""
    plan = copy.copy(self)
    plan.anchor = anchor
    plan.assign = functools.lru_cache(maxsize=64)(plan._assign)
    return plan

  def _phases(self, stop: int) -> list[tuple[int, int, tuple[Fraction, ...]]]:
    """(first batch, end batch, cumulative shares) of the phases from the anchor to `stop`."""
    a = self.anchor.batch
    starts = [a] + [s for s, _ in self.changes if a < s < stop]
    ends = starts[1:] + [stop]
    return [(s, e, [c for start, c in self.changes if start <= s][-1])
            for s, e in zip(starts, ends)]

  def positions(self, batch: int) -> np.ndarray:
    """[sources] windows each source has given out before batch `batch` (0-based)."""
    if batch < self.anchor.batch:
      raise ValueError(f"batch {batch} lies before this run's data anchor (batch "
                       f"{self.anchor.batch}): the mixture changed there")
    out = np.array(self.anchor.positions, np.int64)
    for start, end, cum in self._phases(batch):
      rows = (end - start) * self.batch_size
      tops = [rows * c.numerator // c.denominator for c in cum]  # exact floors
      out += np.diff([0] + tops)
    return out

  def _assign(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """([B] source, [B] position) of every row of the global batch `batch`."""
    start = self.positions(batch)
    counts = self.positions(batch + 1) - start
    src = np.repeat(np.arange(len(counts)), counts)  # [B]
    k = np.concatenate([np.arange(n) for n in counts])  # [B] index within its source
    keys = (k + 0.5) / np.maximum(counts[src], 1)
    order = np.lexsort((src, keys))  # even spread; ties: the lower source first
    return src[order], start[src[order]] + k[order]

  def window(self, source: int, position: int) -> int:
    """The window (index into the source) that the source's `position`-th draw reads."""
    n = self.lengths[source]
    epoch, i = divmod(int(position), n)
    seed = (self.anchor.seeds[source] + epoch) % 2**32
    return int(grain.experimental.index_shuffle(i, max_index=n - 1, seed=seed, rounds=4))

  def rows(self, batch: int) -> list[tuple[int, int, int, int]]:
    """(source, position, epoch, window) of each row of the global batch `batch`."""
    src, pos = self.assign(batch)
    return [(int(s), int(p), int(p) // self.lengths[s], self.window(s, p))
            for s, p in zip(src, pos)]


def initial_seeds(seed: int, sources: int) -> tuple[int, ...]:
  return tuple((seed + k * SEED_STRIDE) % 2**32 for k in range(sources))


def _cumulative(weights: Sequence[float]) -> tuple[Fraction, ...]:
  total = sum(Fraction(w) for w in weights)
  cum, run = [], Fraction(0)
  for w in weights:
    run += Fraction(w)
    cum.append(run / total)
  return tuple(cum)


class _HostRows(grain.sources.RandomAccessDataSource):
  """This host's rows of every global batch, one window per element, batch after batch."""

  def __init__(self, plan: Plan, sources: Sequence, host: int, hosts: int):
    self.plan, self.sources, self.host = plan, sources, host
    self.per_host = plan.batch_size // hosts

  def __len__(self) -> int:
    return sys.maxsize // 2  # endless: every source starts a new epoch when used up

  def __getitem__(self, e: int) -> dict[str, np.ndarray]:
    batch, j = divmod(int(e), self.per_host)
    src, pos = self.plan.assign(batch)
    r = self.host * self.per_host + j
    s = int(src[r])
    return self.sources[s][self.plan.window(s, pos[r])]


class MixtureIterator:
  """This host's training batches ({"inputs", "targets"}: [B / hosts, seq_len]), read by grain
  with its read-ahead threads; `get_state`/`set_state` are the checkpointed position."""

  def __init__(self, plan: Plan, sources: Sequence, host: int = 0, hosts: int = 1,
               spec: dict | None = None):
    if plan.batch_size % hosts:
      raise ValueError(f"config.train.batch_size={plan.batch_size} must divide among {hosts} "
                       "hosts")
    self.plan, self.sources, self.host, self.hosts = plan, list(sources), host, hosts
    self.spec = json.loads(json.dumps(spec or {}))  # a resumed run compares its config with it
    self.seek(plan.anchor.batch)

  def seek(self, batch: int) -> None:
    """Reads on from global batch `batch` (0-based: after that many steps)."""
    ds = grain.MapDataset.source(_HostRows(self.plan, self.sources, self.host, self.hosts))
    self._it = iter(ds.batch(self.plan.batch_size // self.hosts, drop_remainder=True)
                    .to_iter_dataset(READ))
    if batch:
      self._it.set_state({"next_index": batch})
    self.batch = batch  # the next global batch's index (= steps done)

  def __iter__(self) -> MixtureIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    out = next(self._it)
    self.batch += 1
    return out

  def get_state(self) -> dict:
    p, a = self.plan, self.plan.anchor
    return {"format": FORMAT, "batch": self.batch, "spec": self.spec,
            "windows": dict(zip(p.names, p.lengths)),
            "positions": dict(zip(p.names, p.positions(self.batch).tolist())),
            "anchor": {"batch": a.batch, "positions": dict(zip(p.names, a.positions)),
                       "seeds": dict(zip(p.names, a.seeds))}}

  def set_state(self, state: dict) -> None:
    """Continues from a checkpoint's position; from one of an older format (grain's own
    {"next_index"} of the one-source pipeline) too. A changed mixture (weights, schedule,
    sources, batch size, seed, windows per source) continues each source from its position."""
    p = self.plan
    if "format" not in state and "next_index" in state:  # before mixtures: one source
      if len(p.names) != 1:
        raise ValueError(f"the checkpoint's data position is a one-source run's (from before "
                         f"data mixtures); it cannot resume as a mixture of {len(p.names)} "
                         "sources: resume it with its own data config")
      return self.seek(int(state["next_index"]))
    if state.get("format") != FORMAT:
      raise ValueError(f"unknown data position format {state.get('format')!r} (this version "
                       f"reads {FORMAT!r})")
    saved = state["anchor"]
    if state["spec"] == self.spec and state["windows"] == dict(zip(p.names, p.lengths)):
      anchor = Anchor(saved["batch"], tuple(saved["positions"][n] for n in p.names),
                      tuple(saved["seeds"][n] for n in p.names))
    else:
      anchor = rebased(p, state)
      if self.host == 0:
        print(f"note: the data mixture changed since the checkpoint (step {state['batch']}): "
              f"{describe_change(state, self.spec, p)}; each source continues from its "
              "position with the new settings", file=sys.stderr, flush=True)
    self.plan = p.from_anchor(anchor)
    self.seek(int(state["batch"]))

  def positions(self, step: int) -> dict[str, int]:
    """Windows each source has given out after `step` steps."""
    return dict(zip(self.plan.names, self.plan.positions(step).tolist()))

  def rows(self, batch: int) -> list[dict]:
    """What each row of the global batch `batch` (0-based) reads: its source, the source's window
    and epoch (from 1), and the file and first token the window starts at (a corpus read whole,
    stdlib or text_files: file '' and the token in the concatenated split)."""
    out = []
    for row, (s, pos, epoch, w) in enumerate(self.plan.rows(batch)):
      src = self.sources[s]
      if getattr(src, "shards", None):  # tokens.TokenWindows
        k, at = src.locate(w)
        file = src.shards[k].path
      else:
        file, at = "", w * src.seq_len
      out.append({"row": row, "source": self.plan.names[s], "window": w, "epoch": epoch + 1,
                  "position": pos, "file": file, "offset": at})
    return out

  def usage(self, step: int) -> dict[str, float]:
    """Metrics fields after `step` steps: each source's tokens read (its windows' targets) and
    epochs (windows given out / windows in the source; 1.5: half-way through the second)."""
    p = self.plan
    out = {}
    for name, n, src, pos in zip(p.names, p.lengths, self.sources, p.positions(step).tolist()):
      out[f"data/{name}/tokens"] = pos * src.seq_len
      out[f"data/{name}/epochs"] = pos / n
    return out

  def epoch_starts(self, after: int, upto: int) -> list[str]:
    """A line for each new epoch a source began in steps after + 1 .. upto (used up, it starts
    again in a new order)."""
    p, lines = self.plan, []
    before, now = p.positions(after), p.positions(upto)
    for k, name in enumerate(p.names):
      n = p.lengths[k]
      for epoch in range(max(1, -(-int(before[k]) // n)), (int(now[k]) - 1) // n + 1):
        lo, hi = after + 1, upto  # the first step whose batch reads position epoch * n
        while lo < hi:
          mid = (lo + hi) // 2
          lo, hi = (mid + 1, hi) if p.positions(mid)[k] <= epoch * n else (lo, mid)
        lines.append(f"data: source {name} was used up ({n} windows); step {lo} starts its "
                     f"epoch {epoch + 1} in a new shuffled order")
    return lines


def rebased(plan: Plan, state: dict) -> Anchor:
  """A new anchor at the checkpoint's batch: each source known to the checkpoint keeps its
  position and seed; a new source starts at 0 with a seed no other source uses."""
  saved, seeds = state["positions"], state["anchor"]["seeds"]
  used = set(seeds.values())
  fresh = (s for s in ((plan.seed + k * SEED_STRIDE) % 2**32 for k in range(1 << 12))
           if s not in used)
  return Anchor(int(state["batch"]), tuple(int(saved.get(n, 0)) for n in plan.names),
                tuple(int(seeds[n]) if n in seeds else next(fresh) for n in plan.names))


def describe_change(state: dict, spec: dict, plan: Plan) -> str:
  old = {**state["spec"], "windows": state["windows"]}
  new = {**spec, "windows": dict(zip(plan.names, plan.lengths))}
  return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                   if old.get(k) != new.get(k))
