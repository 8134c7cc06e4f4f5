"""Block-sparse flash attention over the grouped PHD layout (Pallas TPU API), with its backward.

Grid (batch, q head, block, visit): the visit axis walks the tiles listed for the block in the
scalar-prefetched tables (pallas_kernels.block_tables), so empty tiles are never loaded or
computed. Full tiles skip the mask; partial tiles evaluate it in-kernel from token indices with
the rule function of the reference (`phd_jax.masks.visible`). The forward keeps the online
softmax in VMEM scratch and returns the logsumexp; the backward recomputes probabilities from it,
dq over the forward tables, dk/dv over the transposed ones (per kv block, the q blocks visiting it).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.block_tables import BlockTables, block_tables, transpose_tables
from phd_jax.masks import MASK_VALUE, visible
from phd_jax.spec import PHDSpec

LANES = 128  # row statistics are kept lane-replicated, the TPU-friendly layout


@dataclasses.dataclass(frozen=True)
class _Geometry:
  spec: PHDSpec
  seq_len: int
  block_q: int
  block_kv: int
  scale: float

  @property
  def total(self) -> int:
    return self.spec.num_tokens(self.seq_len)


def _coords(t: jax.Array, seq_len: int, num_copies: int):
  """Grouped-layout index (>= 0) -> (position, copy), elementwise, truncating division only."""
  kh = max(num_copies - 1, 1)
  h = jnp.maximum(t - seq_len, 0)
  hidden = t >= seq_len
  return (jnp.where(hidden, jax.lax.div(h, kh), t),
          jnp.where(hidden, jax.lax.rem(h, kh) + 1, 0))


def _dot(a, b, contract):  # f32-accumulated matmul, contracting dims (of a, of b)
  return jax.lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=jnp.float32)


def _tile_scores(g: _Geometry, q, k, q_block, kv_block, masked: bool):
  """Scaled scores [bq, bk] of one tile, and its visibility (None when the tile is full)."""
  s = _dot(q, k, ((1,), (1,))) * g.scale
  if not masked:
    return s, None
  rows = q_block * g.block_q + jax.lax.broadcasted_iota(jnp.int32, s.shape, 0)
  cols = kv_block * g.block_kv + jax.lax.broadcasted_iota(jnp.int32, s.shape, 1)
  n, j = _coords(rows, g.seq_len, g.spec.num_copies)
  m, c = _coords(cols, g.seq_len, g.spec.num_copies)
  ok = visible(g.spec, n, j, m, c, floordiv=jax.lax.div) & (rows < g.total) & (cols < g.total)
  return jnp.where(ok, s, MASK_VALUE), ok


def _for_live_tiles(live, full, update):
  """Runs update(masked) on listed tiles: unmasked on full tiles, masked on partial ones."""
  pl.when(live & full)(lambda: update(False))
  pl.when(live & ~full)(lambda: update(True))


# ----------------------------------------------------------------------------- forward


def _fwd_kernel(kv_index_ref, full_ref, num_ref, q_ref, k_ref, v_ref, o_ref, lse_ref,
                m_scr, l_scr, acc_scr, *, g: _Geometry):
  i, visit = pl.program_id(2), pl.program_id(3)

  @pl.when(visit == 0)
  def _init():
    m_scr[...] = jnp.full_like(m_scr, -jnp.inf)
    l_scr[...] = jnp.zeros_like(l_scr)
    acc_scr[...] = jnp.zeros_like(acc_scr)

  def update(masked: bool):
    v = v_ref[...]
    s, _ = _tile_scores(g, q_ref[...], k_ref[...], i, kv_index_ref[i, visit], masked)
    m_prev, l_prev = m_scr[...][:, :1], l_scr[...][:, :1]  # [bq, 1]
    m_new = jnp.maximum(m_prev, s.max(axis=1, keepdims=True))
    p = jnp.exp(s - m_new)
    alpha = jnp.exp(m_prev - m_new)
    l_scr[...] = jnp.broadcast_to(alpha * l_prev + p.sum(axis=1, keepdims=True), l_scr.shape)
    m_scr[...] = jnp.broadcast_to(m_new, m_scr.shape)
    acc_scr[...] = alpha * acc_scr[...] + _dot(p.astype(v.dtype), v, ((1,), (0,)))

  _for_live_tiles(visit < num_ref[i], full_ref[i, visit] != 0, update)

  @pl.when(visit == pl.num_programs(3) - 1)
  def _finish():
    l = l_scr[...][:, :1]
    o_ref[...] = (acc_scr[...] / l).astype(o_ref.dtype)
    lse_ref[...] = jnp.broadcast_to(m_scr[...][:, :1] + jnp.log(l), lse_ref.shape)


@functools.lru_cache(maxsize=64)  # built once per geometry, shared by forward and backward
def _tables(g: _Geometry) -> tuple[BlockTables, BlockTables]:
  fwd = block_tables(g.spec, g.seq_len, block_q=g.block_q, block_kv=g.block_kv)
  return fwd, transpose_tables(fwd, -(-g.total // g.block_kv))


def _prefetch(t: BlockTables) -> tuple[jax.Array, jax.Array, jax.Array]:
  return (jnp.asarray(t.kv_index), jnp.asarray(t.full.astype(np.int32)),
          jnp.asarray(t.num_visits))


def _specs(g: _Geometry, d: int, group: int):
  """BlockSpecs for q-major grids: q-side blocks follow the grid, kv-side blocks the table."""
  q_spec = pl.BlockSpec((None, None, g.block_q, d), lambda b, h, i, s, t, f, n: (b, h, i, 0))
  kv_spec = pl.BlockSpec((None, None, g.block_kv, d),
                         lambda b, h, i, s, t, f, n: (b, jax.lax.div(h, group), t[i, s], 0))
  row_spec = pl.BlockSpec((None, None, g.block_q, LANES), lambda b, h, i, s, t, f, n: (b, h, i, 0))
  return q_spec, kv_spec, row_spec


def _forward(g: _Geometry, q, k, v, interpret: bool):
  """Padded q [B, Hq, Tq, D], k/v [B, Hkv, Tk, D] -> out [B, Hq, Tq, D], lse [B, Hq, Tq, LANES]."""
  b, hq, tq, d = q.shape
  fwd, _ = _tables(g)
  q_spec, kv_spec, row_spec = _specs(g, d, hq // k.shape[1])
  return pl.pallas_call(
      functools.partial(_fwd_kernel, g=g),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=3, grid=(b, hq, *fwd.kv_index.shape),
          in_specs=[q_spec, kv_spec, kv_spec], out_specs=[q_spec, row_spec],
          scratch_shapes=[pltpu.VMEM((g.block_q, LANES), jnp.float32),
                          pltpu.VMEM((g.block_q, LANES), jnp.float32),
                          pltpu.VMEM((g.block_q, d), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((b, hq, tq, LANES), jnp.float32)],
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
      interpret=interpret,
  )(*_prefetch(fwd), q, k, v)


# ----------------------------------------------------------------------------- backward


def _tile_grads(g: _Geometry, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, q_block, kv_block,
                masked: bool):
  """Probabilities p and score gradients ds [bq, bk] of one tile, recomputed from the lse."""
  s, ok = _tile_scores(g, q_ref[...], k_ref[...], q_block, kv_block, masked)
  p = jnp.exp(s - lse_ref[...][:, :1])
  p = p if ok is None else jnp.where(ok, p, 0.0)
  dp = _dot(do_ref[...], v_ref[...], ((1,), (1,)))
  return p, p * (dp - di_ref[...][:, :1]) * g.scale


def _dq_kernel(kv_index_ref, full_ref, num_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref,
               dq_ref, dq_scr, *, g: _Geometry):
  i, visit = pl.program_id(2), pl.program_id(3)

  @pl.when(visit == 0)
  def _init():
    dq_scr[...] = jnp.zeros_like(dq_scr)

  def update(masked: bool):
    k = k_ref[...]
    _, ds = _tile_grads(g, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, i,
                        kv_index_ref[i, visit], masked)
    dq_scr[...] += _dot(ds.astype(k.dtype), k, ((1,), (0,)))

  _for_live_tiles(visit < num_ref[i], full_ref[i, visit] != 0, update)

  @pl.when(visit == pl.num_programs(3) - 1)
  def _finish():
    dq_ref[...] = dq_scr[...].astype(dq_ref.dtype)


def _dkv_kernel(q_index_ref, full_ref, num_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref,
                dk_ref, dv_ref, dk_scr, dv_scr, *, g: _Geometry):
  c, visit = pl.program_id(2), pl.program_id(3)

  @pl.when(visit == 0)
  def _init():
    dk_scr[...] = jnp.zeros_like(dk_scr)
    dv_scr[...] = jnp.zeros_like(dv_scr)

  def update(masked: bool):
    q, do = q_ref[...], do_ref[...]
    p, ds = _tile_grads(g, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, q_index_ref[c, visit],
                        c, masked)
    dv_scr[...] += _dot(p.astype(do.dtype), do, ((0,), (0,)))
    dk_scr[...] += _dot(ds.astype(q.dtype), q, ((0,), (0,)))

  _for_live_tiles(visit < num_ref[c], full_ref[c, visit] != 0, update)

  @pl.when(visit == pl.num_programs(3) - 1)
  def _finish():
    dk_ref[...] = dk_scr[...].astype(dk_ref.dtype)
    dv_ref[...] = dv_scr[...].astype(dv_ref.dtype)


def _backward(g: _Geometry, q, k, v, out, lse, do, interpret: bool):
  """Padded inputs -> dq [B, Hq, Tq, D], dk/dv [B, Hkv, Tk, D]."""
  b, hq, tq, d = q.shape
  hkv, tk = k.shape[1], k.shape[2]
  group = hq // hkv
  fwd, bwd = _tables(g)
  di = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1, keepdims=True)
  di = jnp.broadcast_to(di, (b, hq, tq, LANES))
  q_spec, kv_spec, row_spec = _specs(g, d, group)
  params = pltpu.CompilerParams(
      dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, g=g),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=3, grid=(b, hq, *fwd.kv_index.shape),
          in_specs=[q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec], out_specs=q_spec,
          scratch_shapes=[pltpu.VMEM((g.block_q, d), jnp.float32)]),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=params, interpret=interpret,
  )(*_prefetch(fwd), q, k, v, do, lse, di)

  # kv-major grid: kv-side blocks follow the grid, q-side blocks the transposed table. dk/dv are
  # produced per q head and summed over each GQA group afterwards.
  own_kv = pl.BlockSpec((None, None, g.block_kv, d),
                        lambda b, h, c, s, t, f, n: (b, jax.lax.div(h, group), c, 0))
  per_head_kv = pl.BlockSpec((None, None, g.block_kv, d), lambda b, h, c, s, t, f, n: (b, h, c, 0))
  visiting_q = pl.BlockSpec((None, None, g.block_q, d),
                            lambda b, h, c, s, t, f, n: (b, h, t[c, s], 0))
  visiting_row = pl.BlockSpec((None, None, g.block_q, LANES),
                              lambda b, h, c, s, t, f, n: (b, h, t[c, s], 0))
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, g=g),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=3, grid=(b, hq, *bwd.kv_index.shape),
          in_specs=[visiting_q, own_kv, own_kv, visiting_q, visiting_row, visiting_row],
          out_specs=[per_head_kv, per_head_kv],
          scratch_shapes=[pltpu.VMEM((g.block_kv, d), jnp.float32),
                          pltpu.VMEM((g.block_kv, d), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct((b, hq, tk, d), jnp.float32)] * 2,
      compiler_params=params, interpret=interpret,
  )(*_prefetch(bwd), q, k, v, do, lse, di)
  group_sum = lambda x: x.reshape(b, hkv, group, tk, d).sum(axis=2).astype(k.dtype)
  return dq, group_sum(dk), group_sum(dv)


# ----------------------------------------------------------------------------- entry point


def _pad_to(x: jax.Array, length: int) -> jax.Array:
  return jnp.pad(x, [(0, 0), (0, 0), (0, length - x.shape[2]), (0, 0)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _flash(q, k, v, g: _Geometry, interpret: bool):
  return _flash_fwd(q, k, v, g, interpret)[0]


def _flash_fwd(q, k, v, g: _Geometry, interpret: bool):
  total = g.total
  qp = _pad_to(q, -(-total // g.block_q) * g.block_q)
  kp = _pad_to(k, -(-total // g.block_kv) * g.block_kv)
  vp = _pad_to(v, kp.shape[2])
  out, lse = _forward(g, qp, kp, vp, interpret)
  return out[:, :, :total], (qp, kp, vp, out, lse)


def _flash_bwd(g: _Geometry, interpret: bool, res, do):
  qp, kp, vp, out, lse = res
  total = g.total
  dq, dk, dv = _backward(g, qp, kp, vp, out, lse, _pad_to(do, qp.shape[2]), interpret)
  return dq[:, :, :total], dk[:, :, :total], dv[:, :, :total]


_flash.defvjp(_flash_fwd, _flash_bwd)


def phd_flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, spec: PHDSpec, *,
                        block_q: int = 128, block_kv: int = 128,
                        interpret: bool | None = None) -> jax.Array:
  """q [B, K*L, Hq, D], k/v [B, K*L, Hkv, D] in the grouped layout -> [B, K*L, Hq, D].

  Softmax scale 1/sqrt(D); lengths are padded to whole blocks inside. Differentiable (custom
  VJP with Pallas backward kernels). `interpret` defaults to True on CPU.
  """
  if interpret is None:
    interpret = jax.default_backend() == "cpu"
  if q.shape[1] % spec.num_copies:
    raise ValueError(f"q has {q.shape[1]} tokens, not a multiple of num_copies={spec.num_copies}")
  g = _Geometry(spec, q.shape[1] // spec.num_copies, block_q, block_kv,
                1.0 / math.sqrt(q.shape[-1]))
  t = lambda x: jnp.swapaxes(x, 1, 2)  # [B, T, H, D] <-> [B, H, T, D]
  return t(_flash(t(q), t(k), t(v), g, interpret))
