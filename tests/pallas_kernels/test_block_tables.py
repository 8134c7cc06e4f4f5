"""Block tables of the Pallas kernel against the tiles of the dense reference mask."""
import numpy as np
import pytest

from pallas_kernels.block_tables import block_tables, row_ranges, visited_blocks
from phd_jax.masks import dense_mask
from phd_jax.spec import PHDSpec

SPECS = [
    PHDSpec("vanilla", 1), PHDSpec("phd", 2), PHDSpec("phd", 4),
    PHDSpec("phd_swa", 2, window=5), PHDSpec("phd_swa", 3, window=20),
    PHDSpec("phd_swa", 4, window=1),
    PHDSpec("phd_cswa", 2, window=8, chunk=5), PHDSpec("phd_cswa", 3, window=4, chunk=7),
    PHDSpec("repeat", 1), PHDSpec("repeat", 3),
]


def tiles(mask, bq, bk):
  """[num_q, num_kv] any-visible and all-visible (whole tiles only) of a dense mask."""
  t = mask.shape[0]
  nq, nk = -(-t // bq), -(-t // bk)
  padded = np.zeros((nq * bq, nk * bk), bool)
  padded[:t, :t] = mask
  blocks = padded.reshape(nq, bq, nk, bk)
  whole = np.zeros((nq * bq, nk * bk), bool)
  whole[:t, :t] = True
  whole = whole.reshape(nq, bq, nk, bk).all(axis=(1, 3))
  return blocks.any(axis=(1, 3)), blocks.all(axis=(1, 3)) & whole


def test_row_ranges_describe_the_mask():
  for spec in SPECS:
    mask = dense_mask(spec, 11)
    n, a, b = row_ranges(spec, 11)
    keys = np.arange(mask.shape[1])
    expect = (keys[None, :] <= n[:, None]) | (
        (keys[None, :] >= 11 + a[:, None]) & (keys[None, :] <= 11 + b[:, None]))
    np.testing.assert_array_equal(mask, expect, err_msg=str(spec))


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("seq_len, bq, bk", [(13, 4, 4), (16, 8, 4), (21, 4, 8), (9, 16, 16)])
def test_tables_visit_exactly_the_nonempty_tiles(spec, seq_len, bq, bk):
  any_vis, all_vis = tiles(dense_mask(spec, seq_len), bq, bk)
  t = block_tables(spec, seq_len, block_q=bq, block_kv=bk)
  for i in range(any_vis.shape[0]):
    visits = t.kv_index[i, :t.num_visits[i]]
    np.testing.assert_array_equal(visits, np.flatnonzero(any_vis[i]), err_msg=f"q block {i}")
    np.testing.assert_array_equal(t.full[i, :t.num_visits[i]], all_vis[i, visits])
  assert visited_blocks(spec, seq_len, block_q=bq, block_kv=bk) == any_vis.sum()


def test_phd_visits_about_k_times_vanilla_never_k_squared():
  seq_len, blk = 2048, 128
  vanilla = visited_blocks(PHDSpec("vanilla", 1), seq_len, block_q=blk, block_kv=blk)
  for k in (2, 3, 4):
    phd = visited_blocks(PHDSpec("phd", k), seq_len, block_q=blk, block_kv=blk)
    repeat = visited_blocks(PHDSpec("repeat", k), seq_len, block_q=blk, block_kv=blk)
    assert phd < (k + 1) * vanilla, (k, phd / vanilla)  # K x, plus the hidden diagonal band
    assert repeat >= 0.9 * k * k * vanilla, (k, repeat / vanilla)
