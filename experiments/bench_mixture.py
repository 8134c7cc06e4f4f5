"""A mixture of several sources against one source, through the training loader: the same token
shards read as one source, and split (round robin) into N sources weighted N : N-1 : ... : 1.
Both go through the loader training uses (phd_jax/data/sampling.py over tokens.TokenWindows,
grain's read-ahead threads); the mixture adds the index function's per-batch work (counts per
source, rows, one shuffle per window, as the one source has too). `--sources=N` of
experiments/bench_data.py prints this comparison for every storage it measures.
"""
from __future__ import annotations

import time

from phd_jax.data import sampling
from phd_jax.data import tokens as token_data


def windows_per_s(shards: list, sources: int, seq_len: int, batch: int, batches: int) -> float:
  """Windows per second of `batches` batches of the shards read as `sources` sources."""
  groups = [shards[k::sources] for k in range(sources)]
  srcs = [token_data.TokenWindows(g, seq_len) for g in groups]
  names = [f"s{k}" for k in range(sources)]
  plan = sampling.Plan(names, [len(s) for s in srcs], list(range(sources, 0, -1)), (), batch, 0)
  it = sampling.MixtureIterator(plan, srcs)
  next(it)  # the first batch builds the pipeline
  t = time.perf_counter()
  for _ in range(batches):
    b = next(it)
  assert b["inputs"].shape == (batch, seq_len)
  return batches * batch / (time.perf_counter() - t)


def compare(shards: list, sources: int, seq_len: int, batch: int, batches: int,
            rounds: int = 3) -> tuple[float, float]:
  """(one source, `sources` sources) windows/s: the best of `rounds` alternating passes, so a
  busy machine's slow moments and the page cache favour neither."""
  if len(shards) < sources:
    raise ValueError(f"--sources={sources} needs at least that many shards (--shards="
                     f"{len(shards)})")
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
