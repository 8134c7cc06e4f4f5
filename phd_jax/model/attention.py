"""Attention over the grouped PHD layout, behind one switch (`model.attention_impl`).

- "pallas": the block-sparse flash-attention kernel of pallas_kernels/ (TPU; interpreted on CPU).
- "dense": a masked softmax over the full (K*L)^2 score matrix built from `dense_mask`. The
  reference; for tests only.
- "xla": for the PHD variants, exact and O(K): it never forms a (K*L)^2 matrix. Every copy of
  position n reads the originals 0..n (a causal attention with K times the query rows), and each
  hidden copy also reads one short contiguous run of the hidden stream (same-position copies plus
  the window). The two parts share one softmax. Queries go in rematerialised blocks of positions
  (`model.xla_block`), so memory is O(K*L) per head, not O(K*L^2), and the causal upper triangle
  is skipped. The `repeat` baseline is the exception: plain causal attention over the
  interleaved order, a masked softmax over the full (K*L)^2 score matrix (K^2 work by design).
- "jax": `jax.nn.dot_product_attention` (causal), K = 1 only: the peer baseline that
  experiments/bench_train.py measures vanilla against. On an NVIDIA GPU with 16-bit inputs it
  asks for cuDNN's fused attention; everywhere else (CPU, TPU, float32, shapes cuDNN refuses) it
  runs XLA's implementation (`sdpa_implementation`).
"""
from __future__ import annotations

import math

import flax.core.spmd as core_spmd
import jax
import jax.numpy as jnp
import numpy as np

from phd_jax.config.defaults import XLA_BLOCK
from phd_jax.config.validate import ATTENTION_IMPLS
from phd_jax.masks import MASK_VALUE, dense_mask, hidden_window_start, interleaved_index
from phd_jax.model.sharding import logical_spec
from phd_jax.spec import PHDSpec

SUPERBLOCKS = 4  # groups of query blocks of the xla path; see _superblocks


def attention(q: jax.Array, k: jax.Array, v: jax.Array, spec: PHDSpec, impl: str,
              block_sizes: tuple[int, int] = (128, 128),
              xla_block: int = XLA_BLOCK) -> jax.Array:
  """q [B, K*L, Hq, D], k/v [B, K*L, Hkv, D] in the grouped layout -> [B, K*L, Hq, D].

  block_sizes: (block_q, block_kv) of the Pallas kernel; xla_block: query positions per block
  of the xla path.
  """
  seq_len = q.shape[1] // spec.num_copies
  if impl == "dense":
    return masked_attention(q, k, v, jnp.asarray(dense_mask(spec, seq_len)))
  if impl == "xla":
    if spec.interleaved_causal:  # the repeat baseline: a (K*L)^2 masked softmax
      inter = jnp.asarray(interleaved_index(seq_len, spec.num_copies))
      return masked_attention(q, k, v, inter[None, :] <= inter[:, None])
    return phd_attention(q, k, v, spec, xla_block)
  if impl == "pallas":
    return _pallas_attention(q, k, v, spec, block_sizes)
  if impl == "jax":
    if spec.num_copies != 1:
      raise ValueError(f"attention_impl='jax' is causal attention for K=1 only (got "
                       f"{spec.variant} K={spec.num_copies}); use 'xla' or 'pallas'")
    return sdpa(q, k, v)
  raise ValueError(f"attention_impl={impl!r} is not one of {ATTENTION_IMPLS}")


CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)  # what cuDNN's fused attention takes


def sdpa_implementation(dtype, backend: str | None = None) -> str:
  """"cudnn" on a CUDA GPU for 16-bit inputs, else "xla": jax.nn.dot_product_attention's own
  default (implementation=None) is always XLA's."""
  backend = backend or jax.default_backend()
  return "cudnn" if backend in ("gpu", "cuda") and jnp.dtype(dtype) in CUDNN_DTYPES else "xla"


def sdpa(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Causal jax.nn.dot_product_attention, q [B, T, Hq, D], k/v [B, T, Hkv, D]; cuDNN where it
  applies. cuDNN checks shapes and its version while tracing: a refusal falls back to XLA."""
  if sdpa_implementation(q.dtype) == "cudnn":
    try:
      return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    except (ValueError, NotImplementedError, RuntimeError):
      pass
  return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")


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
  """Positions per hidden sub-block: one sub-block back must cover the reach D = max(W, K-2)."""
  return max(1, -(-spec.hidden_reach // spec.hidden_copies))  # without a window: 1 (own copies)


def phd_attention(q: jax.Array, k: jax.Array, v: jax.Array, spec: PHDSpec,
                  block: int = XLA_BLOCK) -> jax.Array:
  """Exact PHD attention in O(K) work and O(K*L) memory per head; see the module docstring.

  Queries go in blocks of `block` positions (all K copies of each), scanned within a few
  superblocks. A block reads the originals up to its superblock's end (later originals are never
  touched: most of the causal upper triangle is skipped) and the short run of the hidden stream
  its hidden copies can reach. Each block is rematerialised: the backward recomputes its scores,
  so no [K*L, L] score or probability tensor is ever alive, only one block's per superblock.
  """
  kk = spec.num_copies
  b, t, hq, d = q.shape
  hkv = k.shape[2]
  seq_len, kh = t // kk, kk - 1
  qg = _group(q, hkv)  # [B, K*L, Hkv, G, D]
  g = qg.shape[3]
  # Copies side by side per position: [B, L, K, Hkv, G, D]; the hidden stream is position-major.
  q_pos = qg[:, :seq_len, None] if kk == 1 else jnp.concatenate(
      [qg[:, :seq_len, None], qg[:, seq_len:].reshape(b, seq_len, kh, hkv, g, d)], axis=2)
  k_orig, v_orig = k[:, :seq_len], v[:, :seq_len]  # [B, L, Hkv, D]
  k_hid, v_hid = k[:, seq_len:], v[:, seq_len:]  # [B, L*(K-1), Hkv, D]
  # Hidden queries read keys in sub-blocks of T hidden tokens: their own and, for the window
  # variants, the T before (T covers the reach D). Zeros in front stand for "before the start".
  t_sub = _hidden_block_positions(spec) * kh if kh else 0
  windowed = spec.has_window
  front = lambda x: jnp.pad(x, [(0, 0), (t_sub, 0), (0, 0), (0, 0)])
  k_hid, v_hid = front(k[:, seq_len:]), front(v[:, seq_len:])  # [B, T + L*(K-1), Hkv, D]
  block = min(block, seq_len)
  n_blk = -(-seq_len // block)
  # The hidden stream padded at the end too, so every block's key slice has one static size.
  k_hid, v_hid = (jnp.pad(x, [(0, 0), (0, n_blk * block * kh - seq_len * kh), (0, 0), (0, 0)])
                  for x in (k_hid, v_hid))
  h_len = block * kh + (t_sub if windowed else 0)
  q_pad = jnp.pad(q_pos, [(0, 0), (0, n_blk * block - seq_len)] + [(0, 0)] * 4)
  outs = []
  for s_lo, s_hi in _superblocks(n_blk):  # causal skip: later originals are never read
    stop = min(s_hi * block, seq_len)
    k_o, v_o = k_orig[:, :stop], v_orig[:, :stop]
    qs = q_pad[:, s_lo * block:s_hi * block].reshape(b, s_hi - s_lo, block, *q_pos.shape[2:])

    @jax.checkpoint  # the backward recomputes one block's scores at a time
    def one_block(q_blk, start, k_o, v_o, k_hid, v_hid):
      h_lo = start * kh + (0 if windowed else t_sub)
      k_h, v_h = (jax.lax.dynamic_slice_in_dim(x, h_lo, h_len, axis=1) for x in (k_hid, v_hid))
      return _query_block(q_blk, k_o, v_o, k_h, v_h, spec=spec, start=start, t_sub=t_sub)

    def body(carry, xs, k_o=k_o, v_o=v_o, fn=one_block):
      return carry, fn(xs[0], xs[1], k_o, v_o, k_hid, v_hid)

    starts = jnp.arange(s_lo, s_hi) * block
    _, o = jax.lax.scan(body, None, (jnp.moveaxis(qs, 1, 0), starts))  # [n, B, P, K, ...]
    outs.append(jnp.moveaxis(o, 0, 1).reshape(b, (s_hi - s_lo) * block, *o.shape[3:]))
  out = jnp.concatenate(outs, axis=1)[:, :seq_len]  # [B, L, K, Hkv, G, D]
  # Back to the grouped layout: originals first, then the position-major hidden stream.
  out = jnp.concatenate([out[:, :, 0].reshape(b, seq_len, hq, d),
                         out[:, :, 1:].reshape(b, seq_len * kh, hq, d)], axis=1)
  return out.astype(q.dtype)


def _superblocks(n_blk: int) -> list[tuple[int, int]]:
  """Query blocks in SUPERBLOCKS contiguous groups [lo, hi): a group reads the originals up to
  its own end (skipping most of the causal upper triangle: work (S+1)/2S of a full matrix),
  and scans its blocks, so memory holds one block per group, not one per block."""
  edges = np.linspace(0, n_blk, min(SUPERBLOCKS, n_blk) + 1).round().astype(int)
  return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def _query_block(qb, k_o, v_o, k_h, v_h, *, spec: PHDSpec, start, t_sub: int) -> jax.Array:
  """One query block: qb [B, P, K, Hkv, G, D] (positions start..start+P-1, every copy),
  originals k_o/v_o [B, E, Hkv, D] (0..E-1, E = start+P), hidden keys k_h/v_h [B, S, Hkv, D]:
  the block's own hidden tokens, preceded by the T = t_sub before them for the window variants.
  Both parts share one softmax. -> [B, P, K, Hkv, G, D] float32."""
  b, p, kk, hkv, g, d = qb.shape
  kh = kk - 1
  pos = start + jnp.arange(p)  # [P]
  s1 = _scores(qb, k_o, "bpkhgd,bmhd->bhgpkm")  # [B, Hkv, G, P, K, E]
  s1 = jnp.where((jnp.arange(k_o.shape[1]) <= pos[:, None])[:, None, :], s1, MASK_VALUE)
  if kk == 1:
    pr = jax.nn.softmax(s1, axis=-1).astype(v_o.dtype)
    return jnp.einsum("bhgpkm,bmhd->bpkhgd", pr, v_o, preferred_element_type=jnp.float32)
  # Hidden part, in sub-blocks of T queries reading [previous T,] own T keys.
  n_sub = -(-p * kh // t_sub)
  pad = n_sub * t_sub - p * kh
  tail = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  q_h = tail(qb[:, :, 1:].reshape(b, p * kh, hkv, g, d)).reshape(b, n_sub, t_sub, hkv, g, d)
  own = lambda x: tail(x[:, x.shape[1] - p * kh:]).reshape(b, n_sub, t_sub, hkv, d)
  k_s, v_s = own(k_h), own(v_h)  # [B, nsub, T, Hkv, D]
  q_idx = start * kh + jnp.arange(n_sub * t_sub).reshape(n_sub, t_sub, 1)  # hidden index
  k_idx = q_idx.reshape(n_sub, 1, t_sub)
  if k_h.shape[1] > p * kh:  # window variants: the T keys before each sub-block too
    before = lambda x: x[:, :n_sub * t_sub].reshape(b, n_sub, t_sub, hkv, d)  # T + P*kh >= it
    k_s = jnp.concatenate([before(k_h), k_s], axis=2)  # [B, nsub, 2T, Hkv, D]
    v_s = jnp.concatenate([before(v_h), v_s], axis=2)
    k_idx = jnp.concatenate([k_idx - t_sub, k_idx], axis=2)
  see = (k_idx <= q_idx) & (k_idx >= jnp.maximum(hidden_window_start(spec, q_idx), 0))
  s2 = _scores(q_h, k_s, "bnthgd,bnshd->bhgnts")  # [B, Hkv, G, nsub, T, S]
  s2 = jnp.where(see, s2, MASK_VALUE)
  to_pos = lambda x: x.reshape(*x.shape[:3], n_sub * t_sub)[..., :p * kh].reshape(
      *x.shape[:3], p, kh)  # [B, Hkv, G, nsub, T] -> [B, Hkv, G, P, K-1]
  hid = lambda x: jnp.pad(x, [(0, 0)] * 4 + [(1, 0)] + [(0, 0)] * (x.ndim - 5))  # copy 0: none
  m = jax.lax.stop_gradient(jnp.maximum(jnp.max(s1, axis=-1), hid(to_pos(jnp.max(s2, -1)))))
  p1 = jnp.exp(s1 - m[..., None])
  m2 = jnp.pad(m[..., 1:].reshape(b, hkv, g, p * kh), [(0, 0)] * 3 + [(0, pad)])
  p2 = jnp.exp(s2 - m2.reshape(b, hkv, g, n_sub, t_sub, 1))
  denom = jnp.sum(p1, axis=-1) + hid(to_pos(jnp.sum(p2, axis=-1)))  # [B, Hkv, G, P, K]
  o1 = jnp.einsum("bhgpkm,bmhd->bpkhgd", p1.astype(v_o.dtype), v_o,
                  preferred_element_type=jnp.float32)
  o2 = jnp.einsum("bhgnts,bnshd->bnthgd", p2.astype(v_s.dtype), v_s,
                  preferred_element_type=jnp.float32)  # [B, nsub, T, Hkv, G, D]
  o2 = o2.reshape(b, n_sub * t_sub, hkv, g, d)[:, :p * kh].reshape(b, p, kh, hkv, g, d)
  o2 = jnp.pad(o2, [(0, 0), (0, 0), (1, 0)] + [(0, 0)] * 3)
  return (o1 + o2) / jnp.transpose(denom, (0, 3, 4, 1, 2))[..., None]
