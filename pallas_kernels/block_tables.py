"""Which kv blocks each q block must visit, from index arithmetic alone.

In the grouped layout every query row t sees a prefix of the originals, [0, n_t], and one
contiguous run of the hidden stream, [a_t, b_t] (hidden indices; empty when a_t > b_t): rules G
and S give the prefix and the same-position copies, rule W (and C) extends the run backwards, and
the repeat baseline's interleaved causal order is a prefix of both. Both ends of both ranges are
non-decreasing in t, and a_{t+1} <= b_t + 1, so the keys a block of rows sees are the union of two
intervals. A kv block is visited iff it meets that union (then some row sees one of its keys: the
count is the minimum), and full iff every row sees every one of its keys (no mask needed there).
Cost: O(K*L) for the row ranges plus O(q blocks x kv blocks) for the tables; no (K*L)^2 mask.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from phd_jax.masks import hidden_window_start, token_coords
from phd_jax.spec import PHDSpec


def row_ranges(spec: PHDSpec, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per grouped-layout row: last visible original n_t, hidden run [a_t, b_t]; each [K*L]."""
  k = spec.num_copies
  pos, copy = token_coords(seq_len, k)
  hidden = copy >= 1
  h = pos * (k - 1) + copy - 1  # hidden index of hidden rows
  if spec.interleaved_causal:  # every hidden token of an earlier position, and copies <= j
    a = np.zeros_like(pos)
    b = np.where(hidden, h, pos * (k - 1) - 1)
  else:  # originals see no hidden token; hidden rows see one run ending at themselves
    a = np.where(hidden, hidden_window_start(spec, h) if k > 1 else 0, 1)  # originals: empty
    b = np.where(hidden, h, 0)
    a = np.maximum(a, 0)
  return pos, a, b


@dataclasses.dataclass(frozen=True)
class BlockTables:
  """For q block i, its num_visits[i] kv blocks are kv_index[i, :num_visits[i]], in order."""
  kv_index: np.ndarray  # [num_q_blocks, max_visits] int32 (padded by repeating the last one)
  full: np.ndarray  # [num_q_blocks, max_visits] bool: every pair visible, no mask needed
  num_visits: np.ndarray  # [num_q_blocks] int32


def block_tables(spec: PHDSpec, seq_len: int, *, block_q: int, block_kv: int) -> BlockTables:
  """Block tables over the grouped layout of K*L tokens, padded up to whole blocks."""
  total = spec.num_tokens(seq_len)
  n_t, a_t, b_t = row_ranges(spec, seq_len)
  num_q, num_kv = -(-total // block_q), -(-total // block_kv)
  c0 = np.arange(num_kv) * block_kv  # first key of each kv block
  c1 = np.minimum(c0 + block_kv, total)  # one past its last real key
  visits, fulls = [], []
  for i in range(num_q):
    rows = slice(i * block_q, min((i + 1) * block_q, total))
    n, a, b = n_t[rows], a_t[rows], b_t[rows]
    has_run = a <= b
    # The union of the rows' key sets: originals [0, max n]; hidden [min a, max b] + seq_len.
    meets_orig = c0 <= n.max()
    meets_hidden = np.zeros(num_kv, bool)
    if has_run.any():
      lo, hi = seq_len + a[has_run].min(), seq_len + b[has_run].max()
      meets_hidden = (c0 <= hi) & (c1 - 1 >= lo)
    visit = meets_orig | meets_hidden
    rows_whole = rows.stop - rows.start == block_q
    keys_whole = c1 - c0 == block_kv
    full_orig = (c1 - 1 < seq_len) & (c1 - 1 <= n.min())
    full_hidden = (c0 >= seq_len) & (c0 - seq_len >= a.max()) & (c1 - 1 - seq_len <= b.min()) \
        & has_run.all()
    full = visit & rows_whole & keys_whole & (full_orig | full_hidden)
    idx = np.flatnonzero(visit)
    visits.append(idx)
    fulls.append(full[idx])
  max_visits = max(len(v) for v in visits)
  kv_index = np.zeros((num_q, max_visits), np.int32)
  full = np.zeros((num_q, max_visits), bool)
  for i, (v, f) in enumerate(zip(visits, fulls)):
    kv_index[i, :len(v)], kv_index[i, len(v):] = v, v[-1]  # padding re-reads: no new DMA
    full[i, :len(v)] = f
  return BlockTables(kv_index, full, np.array([len(v) for v in visits], np.int32))


def visited_blocks(spec: PHDSpec, seq_len: int, *, block_q: int, block_kv: int) -> int:
  """How many (q block, kv block) tiles the kernel runs."""
  return int(block_tables(spec, seq_len, block_q=block_q, block_kv=block_kv).num_visits.sum())


def transpose_tables(tables: BlockTables, num_kv_blocks: int) -> BlockTables:
  """The same tiles listed per kv block (which q blocks visit it): the dk/dv kernel's tables."""
  per_kv = [[] for _ in range(num_kv_blocks)]
  for i, count in enumerate(tables.num_visits):
    for s in range(count):
      per_kv[tables.kv_index[i, s]].append((i, tables.full[i, s]))
  max_visits = max(1, max(len(v) for v in per_kv))
  q_index = np.zeros((num_kv_blocks, max_visits), np.int32)
  full = np.zeros((num_kv_blocks, max_visits), bool)
  for c, visits in enumerate(per_kv):
    for s, (i, f) in enumerate(visits):
      q_index[c, s], full[c, s] = i, f
    if visits:
      q_index[c, len(visits):] = visits[-1][0]
  return BlockTables(q_index, full, np.array([len(v) for v in per_kv], np.int32))
