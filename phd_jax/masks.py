"""PHD visibility rules, the grouped token layout, and the dense reference mask.

The layout helpers are numpy on static shapes (specs and lengths are Python values); the rules
(`visible`, `hidden_window_start`) are elementwise and take numpy or traced jax arrays alike. So
the same definitions serve the model and the decode masks at trace time, the kernels' block
tables and in-tile masks, and the tests.
docs/method.md states the rules; names below follow it: position n, copy j (0 = original),
hidden index h(n, j) = n*(K-1) + (j-1).
"""
from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np

from phd_jax.spec import POSITION_SCHEMES, PHDSpec

# The score of a masked pair in every softmax (attention paths, kernels, decode). Finite, so a
# fully masked (padding) row gives a harmless uniform softmax instead of NaN.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)

# ----------------------------------------------------------------------------- grouped layout


def token_coords(seq_len: int, num_copies: int) -> tuple[np.ndarray, np.ndarray]:
  """(position n, copy j) of every token of the grouped layout, each [K*L] int64."""
  hidden = np.arange((num_copies - 1) * seq_len)
  pos = np.concatenate([np.arange(seq_len), hidden // max(num_copies - 1, 1)])
  copy = np.concatenate([np.zeros(seq_len, np.int64), hidden % max(num_copies - 1, 1) + 1])
  return pos, copy


def position_ids(seq_len: int, num_copies: int, scheme: str) -> np.ndarray:
  """RoPE positions of the grouped layout [K*L] (docs/method.md, Positions)."""
  if scheme not in POSITION_SCHEMES:
    raise ValueError(f"position_scheme={scheme!r} is not one of {POSITION_SCHEMES}")
  return rope_positions(*token_coords(seq_len, num_copies), num_copies, scheme)


def rope_positions(pos, copy, num_copies: int, scheme: str):
  """RoPE position of copy `copy` of position `pos`, elementwise (numpy or jax)."""
  return pos if scheme == "shared" else pos * num_copies + copy


def interleaved_index(seq_len: int, num_copies: int) -> np.ndarray:
  """Index of each grouped-layout token in the interleaved sequence (n*K + j), [K*L]."""
  pos, copy = token_coords(seq_len, num_copies)
  return pos * num_copies + copy


def last_copy_slice(seq_len: int, num_copies: int) -> tuple[int, int, int]:
  """(start, stop, step) of the last copies, the only tokens that carry the loss."""
  if num_copies == 1:
    return 0, seq_len, 1
  start = seq_len + num_copies - 2
  return start, num_copies * seq_len, num_copies - 1


def expand_copies(x, num_copies: int, axis: int = 1):
  """[..., L, ...] -> [..., K*L, ...] in the grouped layout: originals, then the hidden stream.

  Works for numpy and jax arrays (it uses the array's own module).
  """
  if num_copies == 1:
    return x
  xp = _array_module(x)
  hidden = xp.repeat(x, num_copies - 1, axis=axis)  # position-major, copies 1..K-1
  return xp.concatenate([x, hidden], axis=axis)


def _array_module(x):
  return jnp if isinstance(x, jax.Array) else np


# ----------------------------------------------------------------------------- reference mask


def hidden_window_start(spec: PHDSpec, h: np.ndarray) -> np.ndarray:
  """First hidden index a hidden token h reads (it reads one contiguous run up to h itself).

  Union of rule S (same-position copies, from n*(K-1)) and rule W (the last W hidden tokens,
  cut at the chunk's first hidden token for phd_cswa). Works on numpy and jax integer arrays.
  """
  kh = spec.hidden_copies
  own = (h // kh) * kh  # first hidden copy of the same position
  if not spec.has_window:
    return own
  start = h - spec.window
  if spec.chunked:
    chunk_first = ((h // kh) // spec.chunk) * spec.chunk * kh
    start = _array_module(h).maximum(start, chunk_first)
  return _array_module(h).minimum(own, start)


def visible(spec: PHDSpec, n, j, m, i, floordiv=operator.floordiv):
  """Whether query (position n, copy j) may read key (position m, copy i); broadcasts.

  The rules of docs/method.md, elementwise over numpy or jax integer arrays: the one definition
  behind the reference mask, the decode-time masks and the kernel's in-tile masks. Kernels pass
  a truncating `floordiv` (their indices are never negative; Mosaic has no cheap floor division).
  """
  k = spec.num_copies
  if spec.interleaved_causal:
    return m * k + i <= n * k + j
  see = ((i == 0) & (m < n)) | ((m == n) & (i <= j))  # rules G and S
  if spec.has_window:
    dist = (n * (k - 1) + j - 1) - (m * (k - 1) + i - 1)
    window = (i >= 1) & (j >= 1) & (dist > 0) & (dist <= spec.window)  # rule W
    if spec.chunked:
      window = window & (floordiv(m, spec.chunk) == floordiv(n, spec.chunk))  # rule C
    see = see | window
  return see


def dense_mask(spec: PHDSpec, seq_len: int) -> np.ndarray:
  """Visibility of every (query, key) pair, [K*L, K*L] bool, grouped layout.

  The reference that the attention paths and kernels are judged against; it materialises
  (K*L)^2 entries, so it is for tests and small diagnostics only.
  """
  pos, copy = token_coords(seq_len, spec.num_copies)
  return visible(spec, pos[:, None], copy[:, None], pos[None, :], copy[None, :])


def visible_pairs(spec: PHDSpec, seq_len: int, rows: int = 1024) -> int:
  """Number of visible (query, key) pairs: dense_mask(spec, seq_len).sum(), counted `rows` query
  rows at a time, so memory stays O(rows * K*L) where the whole mask is (K*L)^2 (at the paper's
  L=4096, K=3 that is 151M entries, built at every training start for the FLOP count)."""
  pos, copy = token_coords(seq_len, spec.num_copies)
  return sum(int(visible(spec, pos[r:r + rows, None], copy[r:r + rows, None], pos[None, :],
                         copy[None, :]).sum()) for r in range(0, pos.size, rows))

