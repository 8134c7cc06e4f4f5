"""dense_mask against the visibility rules of docs/method.md, written out literally."""
import itertools

import numpy as np
import pytest

from phd_jax.masks import (
  dense_mask,
  expand_copies,
  interleaved_index,
  last_copy_slice,
  position_ids,
  token_coords,
  visible_pairs,
)
from phd_jax.spec import PHDSpec

SPECS = [
    PHDSpec("vanilla", 1),
    PHDSpec("phd", 1), PHDSpec("phd", 2), PHDSpec("phd", 4),
    PHDSpec("phd_swa", 2, window=1), PHDSpec("phd_swa", 3, window=4),
    PHDSpec("phd_swa", 4, window=2),
    PHDSpec("phd_swa", 3, window=50),
    PHDSpec("phd_cswa", 2, window=3, chunk=2), PHDSpec("phd_cswa", 3, window=5, chunk=3),
    PHDSpec("phd_cswa", 4, window=1, chunk=4), PHDSpec("phd_cswa", 2, window=16, chunk=5),
    PHDSpec("repeat", 1), PHDSpec("repeat", 3),
]


def rule_mask(spec: PHDSpec, seq_len: int) -> np.ndarray:
  """One (query, key) pair at a time, straight from the spec's rules G, S, W, C."""
  k = spec.num_copies
  coords = [(n, 0) for n in range(seq_len)] + [(n, j) for n in range(seq_len) for j in range(1, k)]
  h = lambda n, j: n * (k - 1) + (j - 1)
  out = np.zeros((len(coords), len(coords)), bool)
  for (a, (n, j)), (b, (m, i)) in itertools.product(enumerate(coords), repeat=2):
    if spec.variant == "repeat":
      out[a, b] = m * k + i <= n * k + j
      continue
    g = i == 0 and m < n
    s = m == n and i <= j
    w = False
    if spec.variant in ("phd_swa", "phd_cswa"):
      w = i >= 1 and j >= 1 and 0 < h(n, j) - h(m, i) <= spec.window
      if spec.variant == "phd_cswa":
        w = w and m // spec.chunk == n // spec.chunk
    out[a, b] = g or s or w
  return out


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("seq_len", [1, 5, 9])
def test_dense_mask_equals_rules(spec, seq_len):
  np.testing.assert_array_equal(dense_mask(spec, seq_len), rule_mask(spec, seq_len))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.variant != "repeat"], ids=str)
def test_originals_are_a_vanilla_causal_stream(spec):
  seq_len = 11
  mask = dense_mask(spec, seq_len)
  causal = np.tril(np.ones((seq_len, seq_len), bool))
  np.testing.assert_array_equal(mask[:seq_len, :seq_len], causal)
  assert not mask[:seq_len, seq_len:].any(), "an original token sees a hidden token"


@pytest.mark.parametrize("variant", ["vanilla", "phd", "repeat"])
def test_one_copy_is_causal(variant):
  mask = dense_mask(PHDSpec(variant, 1), 7)
  np.testing.assert_array_equal(mask, np.tril(np.ones((7, 7), bool)))


def test_grouped_layout_blocks():
  """Hidden x originals is a staircase of K-1 rows per position; hidden x hidden a band/blocks."""
  seq_len, k = 6, 3
  stair = np.repeat(np.tril(np.ones((seq_len, seq_len), bool)), k - 1, axis=0)
  for spec in [PHDSpec("phd", k), PHDSpec("phd_swa", k, window=3)]:
    np.testing.assert_array_equal(dense_mask(spec, seq_len)[seq_len:, :seq_len], stair)
  hh = dense_mask(PHDSpec("phd", k), seq_len)[seq_len:, seq_len:]
  block = np.tril(np.ones((k - 1, k - 1), bool))
  np.testing.assert_array_equal(hh, np.kron(np.eye(seq_len, dtype=bool), block))
  band = dense_mask(PHDSpec("phd_swa", k, window=3), seq_len)[seq_len:, seq_len:]
  d = np.arange(band.shape[0])[:, None] - np.arange(band.shape[0])[None, :]
  np.testing.assert_array_equal(band, (d >= 0) & (d <= 3))


def test_chunks_cut_the_window():
  spec = PHDSpec("phd_cswa", 2, window=8, chunk=4)
  hh = dense_mask(spec, 12)[12:, 12:]
  pos = np.arange(12)
  assert not hh[4, 3] and hh[5, 4] and hh[7, 4] and not hh[8, 7]
  same_chunk = (pos[:, None] // 4) == (pos[None, :] // 4)
  assert not (hh & ~same_chunk).any()


def test_layout_helpers():
  seq_len, k = 4, 3
  pos, copy = token_coords(seq_len, k)
  np.testing.assert_array_equal(pos, [0, 1, 2, 3, 0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(copy, [0, 0, 0, 0, 1, 2, 1, 2, 1, 2, 1, 2])
  np.testing.assert_array_equal(position_ids(seq_len, k, "shared"), pos)
  np.testing.assert_array_equal(position_ids(seq_len, k, "interleaved"), pos * k + copy)
  np.testing.assert_array_equal(np.sort(interleaved_index(seq_len, k)), np.arange(k * seq_len))
  tokens = np.array([[7, 8, 9, 10]])
  np.testing.assert_array_equal(expand_copies(tokens, k)[0],
                                [7, 8, 9, 10, 7, 7, 8, 8, 9, 9, 10, 10])
  start, stop, step = last_copy_slice(seq_len, k)
  last = np.arange(k * seq_len)[start:stop:step]
  assert list(copy[last]) == [k - 1] * seq_len and list(pos[last]) == list(range(seq_len))
  assert last_copy_slice(seq_len, 1) == (0, seq_len, 1)


@pytest.mark.parametrize("kwargs, field", [
    (dict(variant="phd_xl", num_copies=2), "variant"),
    (dict(variant="phd", num_copies=0), "num_copies"),
    (dict(variant="vanilla", num_copies=2), "num_copies"),
    (dict(variant="phd_swa", num_copies=2), "window"),
    (dict(variant="phd", num_copies=2, window=4), "window"),
    (dict(variant="phd_cswa", num_copies=2, window=4), "chunk"),
    (dict(variant="phd_swa", num_copies=2, window=4, chunk=8), "chunk"),
    (dict(variant="phd", num_copies=2.0), "num_copies"),
])
def test_spec_validation_names_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    PHDSpec(**kwargs)


@pytest.mark.parametrize("spec", [PHDSpec("vanilla", 1), PHDSpec("phd", 3), PHDSpec("repeat", 2),
                                  PHDSpec("phd_swa", 4, window=5),
                                  PHDSpec("phd_cswa", 2, window=16, chunk=8)], ids=str)
def test_visible_pairs_counts_the_dense_mask_in_row_blocks(spec):
  for seq_len in (7, 45):
    assert visible_pairs(spec, seq_len, rows=13) == int(dense_mask(spec, seq_len).sum())
