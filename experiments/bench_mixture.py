"""A mixture of several sources against one source, through the training loader: N sources,
weighted N : N-1 : ... : 1, each over the same token shards as the one source, so that both read
the same bytes from sources of the same size and differ only in the mixing: the index function's
per-batch work (counts per source, rows) and a shuffle per source. Both go through the loader
training uses (phd_jax/data/sampling.py over tokens.TokenWindows, grain's read-ahead threads).
`--sources=N` of experiments/bench_data.py prints this comparison for every storage it measures.

Why the same size: grain's shuffle (index_shuffle) permutes a block of at least 2^16 indices and
walks the cycle until it lands inside the source, so a window of a source of n < 65,536 windows
costs about 65,536 / n walk steps (~0.4 us each on a 2-core CPU) besides the call (~4 us).
Splitting small shards into several sources would measure that (a property of small sources,
one source alone pays it too), not the mixture; real sources have millions of windows.
"""
from __future__ import annotations

import time

from phd_jax.data import sampling
from phd_jax.data import tokens as token_data


def windows_per_s(shards: list, sources: int, seq_len: int, batch: int, batches: int) -> float:
  """Windows per second of `batches` batches from `sources` sources over the shards, timed from
  the loader's creation: its read-ahead (16 batches, phd_jax/data/sampling.py's READ) runs
  while a first batch is awaited, so timing only later batches measures the buffer, not the
  reads."""
  srcs = [token_data.TokenWindows(shards, seq_len) for _ in range(sources)]
  names = [f"s{k}" for k in range(sources)]
  plan = sampling.Plan(names, [len(s) for s in srcs], list(range(sources, 0, -1)), (), batch, 0)
  t = time.perf_counter()  # from the start: grain's read-ahead would hide a slow first batch
  it = sampling.MixtureIterator(plan, srcs)
  for _ in range(batches):
    b = next(it)
  assert b["inputs"].shape == (batch, seq_len)
  return batches * batch / (time.perf_counter() - t)


def compare(shards: list, sources: int, seq_len: int, batch: int, batches: int,
            rounds: int = 3) -> tuple[float, float]:
  """(one source, `sources` sources) windows/s: the best of `rounds` alternating passes, so a
  busy machine's slow moments and the page cache favour neither."""
  one, mix = [], []
  for _ in range(rounds):
    one.append(windows_per_s(shards, 1, seq_len, batch, batches))
    mix.append(windows_per_s(shards, sources, seq_len, batch, batches))
  return max(one), max(mix)


def report(results: dict[str, tuple[float, float]], sources: int) -> str:
  """The table and one `mixture storage=...` line per storage."""
  width = max(len("storage"), *map(len, results))
  lines = [f"{'storage':<{width}}  {'1 source win/s':>14}  {f'{sources} sources win/s':>15}  "
           f"{'ratio':>6}"]
  for name, (one, mix) in results.items():
    lines.append(f"{name:<{width}}  {one:>14.0f}  {mix:>15.0f}  {mix / one:>6.3f}")
  for name, (one, mix) in results.items():
    lines.append(f"mixture storage={name} sources={sources} one_source_windows_s={one:.0f} "
                 f"mixture_windows_s={mix:.0f} ratio={mix / one:.3f}")
  return "\n".join(lines)
