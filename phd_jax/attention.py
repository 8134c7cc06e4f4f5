"""Attention over the grouped PHD layout, behind one switch (`model.attention_impl`).

- "pallas": the block-sparse flash-attention kernel of pallas_kernels/ (TPU; interpreted on CPU).
- "dense": a masked softmax over the full (K*L)^2 score matrix built from `dense_mask`. The
  reference; for tests only.
- "xla": exact and O(K): it never forms a (K*L)^2 matrix. Every copy of position n reads the
  originals 0..n (a causal attention with K times the query rows), and each hidden copy also reads
  one short contiguous run of the hidden stream (same-position copies plus the window), computed
  block-locally. The two parts share one softmax.
The "repeat" baseline is full causal attention over the interleaved order: K^2 work by design.
"""
from __future__ import annotations

import math

import flax.core.spmd as core_spmd
import jax
import jax.numpy as jnp
import numpy as np

from phd_jax.masks import PHDSpec, dense_mask, hidden_window_start, interleaved_index
from phd_jax.sharding import logical_spec

ATTENTION_IMPLS = ("dense", "xla", "pallas")
# Finite, so fully masked (padding) rows give a harmless uniform softmax instead of NaN.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, spec: PHDSpec, impl: str,
              block_sizes: tuple[int, int] = (128, 128)) -> jax.Array:
  """q [B, K*L, Hq, D], k/v [B, K*L, Hkv, D] in the grouped layout -> [B, K*L, Hq, D].

  block_sizes: (block_q, block_kv) of the Pallas kernel.
  """
  seq_len = q.shape[1] // spec.num_copies
  if impl == "dense":
    return masked_attention(q, k, v, jnp.asarray(dense_mask(spec, seq_len)))
  if impl == "xla":
    if spec.variant == "repeat":
      inter = jnp.asarray(interleaved_index(seq_len, spec.num_copies))
      return masked_attention(q, k, v, inter[None, :] <= inter[:, None])
    return phd_attention(q, k, v, spec)
  if impl == "pallas":
    return _pallas_attention(q, k, v, spec, block_sizes)
  raise ValueError(f"attention_impl={impl!r} is not one of {ATTENTION_IMPLS}")


def _pallas_attention(q, k, v, spec: PHDSpec, block_sizes: tuple[int, int]) -> jax.Array:
  """The Pallas kernel; under a mesh, shard_map'ed over batch and heads (each shard is whole)."""
  from pallas_kernels import phd_flash_attention  # local: Pallas is only needed here
  kernel = lambda q, k, v: phd_flash_attention(q, k, v, spec, block_q=block_sizes[0],
                                               block_kv=block_sizes[1])
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not core_spmd.get_logical_axis_rules():
    return kernel(q, k, v)
  q_spec = logical_spec(("batch", "length", "heads", None))
  kv_spec = logical_spec(("batch", "length", "kv_heads", None))
  return jax.shard_map(kernel, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec,
                       check_vma=False)(q, k, v)


def _group(q: jax.Array, num_kv_heads: int) -> jax.Array:
  """[..., Hq, D] -> [..., Hkv, G, D] so that GQA is a plain einsum."""
  *lead, hq, d = q.shape
  return q.reshape(*lead, num_kv_heads, hq // num_kv_heads, d)


def _scores(q, k, spec_str: str) -> jax.Array:
  scale = 1.0 / math.sqrt(q.shape[-1])
  return jnp.einsum(spec_str, q, k, preferred_element_type=jnp.float32) * scale


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax attention with an explicit mask [T, S] or per row [B, T, S].

  q [B, T, Hq, D], k/v [B, S, Hkv, D].
  """
  b, t, hq, d = q.shape
  s = _scores(_group(q, k.shape[2]), k, "bthgd,bshd->bhgts")  # [B, Hkv, G, T, S]
  s = jnp.where(mask[:, None, None] if mask.ndim == 3 else mask, s, MASK_VALUE)
  p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhgts,bshd->bthgd", p, v, preferred_element_type=jnp.float32)
  return out.reshape(b, t, hq, d).astype(q.dtype)


def _hidden_block_positions(spec: PHDSpec) -> int:
  """Positions per hidden block: one block back must cover the reach D = max(W, K-2)."""
  if spec.variant == "phd":
    return 1  # a hidden token reads only its own position's copies
  return max(1, -(-spec.hidden_reach // spec.hidden_copies))


def phd_attention(q: jax.Array, k: jax.Array, v: jax.Array, spec: PHDSpec) -> jax.Array:
  """Exact PHD attention in O(K) work; see the module docstring for the decomposition."""
  kk = spec.num_copies
  b, t, hq, d = q.shape
  hkv = k.shape[2]
  seq_len = t // kk
  qg = _group(q, hkv)  # [B, K*L, Hkv, G, D]
  g = qg.shape[3]
  # Copies side by side per position: [B, L, K, Hkv, G, D]; the hidden stream is position-major.
  q_pos = jnp.concatenate(
      [qg[:, :seq_len, None], qg[:, seq_len:].reshape(b, seq_len, kk - 1, hkv, g, d)], axis=2)
  k_orig, v_orig = k[:, :seq_len], v[:, :seq_len]

  # Part 1: copy j of position n reads originals m <= n (rules G and S with i = 0).
  s1 = _scores(q_pos, k_orig, "blkhgd,bmhd->bhglkm")  # [B, Hkv, G, L, K, L]
  causal = jnp.arange(seq_len)[:, None] >= jnp.arange(seq_len)[None, :]
  s1 = jnp.where(causal[:, None, :], s1, MASK_VALUE)
  if kk == 1:
    p1 = jax.nn.softmax(s1, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhglkm,bmhd->blkhgd", p1, v_orig, preferred_element_type=jnp.float32)
    return out.reshape(b, t, hq, d).astype(q.dtype)

  # Part 2: hidden copies read a contiguous run of the hidden stream, in blocks of P positions
  # (T = P*(K-1) hidden tokens); a block reads itself and, for the window variants, the block
  # before it, which covers the reach D <= T.
  kh = kk - 1
  p_blk = _hidden_block_positions(spec)
  n_blk = -(-seq_len // p_blk)
  pad = (n_blk * p_blk - seq_len) * kh
  t_blk = p_blk * kh

  def blocks(x):  # hidden stream [B, L*(K-1), ...] -> [B, nb, T, ...], zero padded
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return x.reshape(b, n_blk, t_blk, *x.shape[2:])

  q_h = blocks(qg[:, seq_len:])  # [B, nb, T, Hkv, G, D]
  k_h, v_h = blocks(k[:, seq_len:]), blocks(v[:, seq_len:])  # [B, nb, T, Hkv, D]
  q_idx = jnp.arange(n_blk * t_blk).reshape(n_blk, t_blk, 1)  # hidden index of each query
  k_idx = q_idx.reshape(n_blk, 1, t_blk)
  if spec.variant != "phd":
    prev = lambda x: jnp.pad(x, [(0, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2))[:, :-1]
    k_h = jnp.concatenate([prev(k_h), k_h], axis=2)  # [B, nb, 2T, Hkv, D]
    v_h = jnp.concatenate([prev(v_h), v_h], axis=2)
    k_idx = jnp.concatenate([k_idx - t_blk, k_idx], axis=2)
  visible = (k_idx <= q_idx) & (k_idx >= jnp.maximum(hidden_window_start(spec, q_idx), 0))
  s2 = _scores(q_h, k_h, "bnthgd,bnshd->bhgnts")  # [B, Hkv, G, nb, T, S]
  s2 = jnp.where(visible, s2, MASK_VALUE)

  # One softmax over both parts: shared running max, shared denominator.
  m1 = jnp.max(s1, axis=-1)  # [B, Hkv, G, L, K]
  m2 = jnp.max(s2, axis=-1).reshape(b, hkv, g, n_blk * p_blk, kh)[:, :, :, :seq_len]
  m_all = jax.lax.stop_gradient(
      jnp.concatenate([m1[..., :1], jnp.maximum(m1[..., 1:], m2)], axis=-1))
  m_blk = jnp.pad(m_all[..., 1:], [(0, 0)] * 3 + [(0, n_blk * p_blk - seq_len), (0, 0)])
  m_blk = m_blk.reshape(b, hkv, g, n_blk, t_blk)
  p1 = jnp.exp(s1 - m_all[..., None])
  p2 = jnp.exp(s2 - m_blk[..., None])
  l1 = jnp.sum(p1, axis=-1)  # [B, Hkv, G, L, K]
  l2 = jnp.sum(p2, axis=-1).reshape(b, hkv, g, n_blk * p_blk, kh)[:, :, :, :seq_len]
  denom = l1 + jnp.pad(l2, [(0, 0)] * 4 + [(1, 0)])
  o1 = jnp.einsum("bhglkm,bmhd->blkhgd", p1.astype(v.dtype), v_orig,
                  preferred_element_type=jnp.float32)  # [B, L, K, Hkv, G, D]
  o2 = jnp.einsum("bhgnts,bnshd->bnthgd", p2.astype(v.dtype), v_h,
                  preferred_element_type=jnp.float32)  # [B, nb, T, Hkv, G, D]
  o2 = o2.reshape(b, n_blk * p_blk, kh, hkv, g, d)[:, :seq_len]
  out = o1 + jnp.pad(o2, [(0, 0), (0, 0), (1, 0)] + [(0, 0)] * 3)
  out = out / jnp.transpose(denom, (0, 3, 4, 1, 2))[..., None]  # [B, L, K, Hkv, G, D]
  # Back to the grouped layout: originals first, then the position-major hidden stream.
  out = jnp.concatenate([out[:, :, 0].reshape(b, seq_len, hq, d),
                         out[:, :, 1:].reshape(b, seq_len * kh, hq, d)], axis=1)
  return out.astype(q.dtype)
