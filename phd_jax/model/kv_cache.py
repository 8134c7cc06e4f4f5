"""The decode-time KV cache, and the attention of a cached forward over it.

Per layer the cache holds what docs/method.md says inference keeps, and nothing else:
- the originals' K/V, one slot per position: exactly the vanilla cache (the `repeat` baseline
  keeps all K copies, slot n*K + j: that K-fold cost is what it exists to show);
- for phd_swa / phd_cswa, a ring buffer of the last W hidden tokens' K/V. Each ring slot records
  the hidden-stream index it holds, so the window and chunk rules mask it like any other key.
Hidden K/V outside the window are dropped after each step.

A cached forward (`Transformer.__call__` given a cache) pushes T tokens through the model's own
blocks, each token with its (position, copy) coordinates. In every layer each token reads the
cached originals, the ring and the hidden tokens among the T, masked by the one rule set
`masks.visible`; the originals' K/V are written to the cache as they pass, and the newest hidden
tokens' K/V enter the ring. Where each token writes and what it reads is the same in every layer,
so it is worked out once (`cache_access`) and handed to each block with that layer's K/V.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from phd_jax.config import model_spec
from phd_jax.masks import visible
from phd_jax.model.attention import masked_attention
from phd_jax.model.sharding import constrain
from phd_jax.spec import PHDSpec


@struct.dataclass
class KVCache:
  k: jax.Array  # [N, B, S, Hkv, D]: originals, S = max_len (repeat: K * max_len)
  v: jax.Array  # [N, B, S, Hkv, D]
  window_k: jax.Array  # [N, B, W, Hkv, D]: last W hidden tokens (W = 0 for phd, vanilla, repeat)
  window_v: jax.Array  # [N, B, W, Hkv, D]
  window_index: jax.Array  # [B, W] int32: hidden-stream index in each ring slot, -1 = empty
  length: jax.Array  # [B] int32: positions cached per row


@struct.dataclass
class TokenCoords:
  """Where each of the T tokens of a cached forward sits, and which are real (a ragged batch
  pads its shorter rows: their padding neither writes to the cache nor is read)."""
  pos: jax.Array  # [B, T] int32: position n
  valid: jax.Array  # [B, T] bool
  copy: tuple[int, ...] = struct.field(pytree_node=False)  # [T] copy j, the same for every row


@struct.dataclass
class CacheAccess:
  """Where the tokens of one cached forward write their K/V and which keys they read: the same
  in every layer."""
  write: jax.Array  # [B, T] global-cache slot of each token's K/V; S (out of range) = not kept
  mask: jax.Array  # [B, T, S + W (+ T)] keys each token reads: cache | ring (| the T tokens)
  ring: jax.Array | None  # [B, T] ring slot each hidden token's K/V enters, W = dropped
  hidden_index: jax.Array | None  # [B, T] hidden-stream index h(n, j) of each token
  own_keys: bool = struct.field(pytree_node=False)  # the T tokens' hidden K/V are keys too


@struct.dataclass
class LayerCache:
  """One layer's part of a KVCache (no layer axis) and the forward's access: what a Block
  takes and gives back."""
  k: jax.Array  # [B, S, Hkv, D]
  v: jax.Array  # [B, S, Hkv, D]
  window_k: jax.Array  # [B, W, Hkv, D]
  window_v: jax.Array  # [B, W, Hkv, D]
  access: CacheAccess


def init_cache(model_cfg: ml_collections.ConfigDict, batch_size: int, max_len: int) -> KVCache:
  """An empty cache for `batch_size` rows of up to `max_len` positions (original tokens)."""
  spec = model_spec(model_cfg)
  if not isinstance(max_len, int) or max_len < 1:
    raise ValueError(f"max_len={max_len!r} must be an int >= 1 (it counts positions)")
  n, h, d = model_cfg.num_layers, model_cfg.num_kv_heads, model_cfg.head_dim
  dtype = jnp.dtype(model_cfg.dtype)
  slots = max_len * spec.cache_slots_per_position
  w = spec.window
  names = ("layers", "batch", "length", "kv_heads", None)  # sharded like the activations
  kv = lambda length: constrain(jnp.zeros((n, batch_size, length, h, d), dtype), names)
  return KVCache(
      k=kv(slots), v=kv(slots), window_k=kv(w), window_v=kv(w),
      window_index=jnp.full((batch_size, w), -1, jnp.int32),
      length=jnp.zeros((batch_size,), jnp.int32))


def cache_bytes(model_cfg: ml_collections.ConfigDict, batch_size: int, max_len: int) -> int:
  """Bytes of K/V the cache holds (the per-row bookkeeping integers are not counted)."""
  c = jax.eval_shape(lambda: init_cache(model_cfg, batch_size, max_len))
  return sum(x.size * x.dtype.itemsize for x in (c.k, c.v, c.window_k, c.window_v))


def cache_access(spec: PHDSpec, cache: KVCache, coords: TokenCoords) -> CacheAccess:
  """Where the tokens at `coords` write and what they read, from the visibility rules."""
  kk, every_copy = spec.num_copies, spec.caches_every_copy
  pos, valid = coords.pos, coords.valid
  b, t = pos.shape
  # Static: are hidden tokens among the T, read as keys from here (every_copy: from the cache)?
  own_keys = not every_copy and any(j >= 1 for j in coords.copy)
  copy = jnp.broadcast_to(jnp.asarray(coords.copy, jnp.int32), (b, t))
  # Where the K/V land in the cache: originals (every copy for repeat); the rest is not kept.
  slots = cache.k.shape[2]
  writes = valid if every_copy else valid & (copy == 0)
  write = jnp.where(writes, pos * kk + copy if every_copy else pos, slots)  # [B, T]
  # Coordinates (position m, copy i) and validity of every key: cache | ring | the T tokens.
  s = jnp.arange(slots)
  cache_m, cache_i = (s // kk, s % kk) if every_copy else (s, jnp.zeros_like(s))
  g = cache.window_index  # [B, W]
  kh = max(kk - 1, 1)
  key_m = [jnp.broadcast_to(cache_m, (b, slots)), g // kh] + ([pos] if own_keys else [])
  key_i = [jnp.broadcast_to(cache_i, (b, slots)), g % kh + 1] + ([copy] if own_keys else [])
  key_ok = [jnp.ones((b, slots), bool), g >= 0] + ([valid & (copy >= 1)] if own_keys else [])
  key_m, key_i, key_ok = (jnp.concatenate(x, axis=1) for x in (key_m, key_i, key_ok))
  mask = visible(spec, pos[:, :, None], copy[:, :, None], key_m[:, None], key_i[:, None])
  mask = mask & key_ok[:, None]  # [B, T, S + W (+ T)]
  ring = h = None
  if spec.has_window:  # the last W hidden tokens enter the ring; older ones are dropped
    w = spec.window
    h = pos * kh + copy - 1
    hidden = valid & (copy >= 1)
    newest = jnp.max(jnp.where(hidden, h, -1), axis=1, keepdims=True)
    ring = jnp.where(hidden & (h > newest - w), h % w, w)  # [B, T]
  return CacheAccess(write=write, mask=mask, ring=ring, hidden_index=h, own_keys=own_keys)


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     cache: LayerCache) -> tuple[jax.Array, LayerCache]:
  """q [B, T, Hq, D], k/v [B, T, Hkv, D] of the forward's tokens -> their attention [B, T, Hq, D]
  over the layer's cache, and the cache with their K/V written in (the ring only after it is
  read: the T tokens' own hidden K/V are read from themselves)."""
  a = cache.access
  rows = jnp.arange(q.shape[0])[:, None]
  k, v = k.astype(cache.k.dtype), v.astype(cache.v.dtype)
  ck = cache.k.at[rows, a.write].set(k, mode="drop")
  cv = cache.v.at[rows, a.write].set(v, mode="drop")
  keys = jnp.concatenate([ck, cache.window_k] + ([k] if a.own_keys else []), axis=1)
  vals = jnp.concatenate([cv, cache.window_v] + ([v] if a.own_keys else []), axis=1)
  out = masked_attention(q, keys, vals, a.mask)
  cache = cache.replace(k=ck, v=cv)
  if a.ring is not None:
    cache = cache.replace(window_k=cache.window_k.at[rows, a.ring].set(k, mode="drop"),
                          window_v=cache.window_v.at[rows, a.ring].set(v, mode="drop"))
  return out, cache


def written_ring_index(cache: KVCache, access: CacheAccess) -> jax.Array:
  """The cache's window_index [B, W] once the forward's hidden tokens have entered the ring."""
  if access.ring is None:
    return cache.window_index
  rows = jnp.arange(cache.window_index.shape[0])[:, None]
  return cache.window_index.at[rows, access.ring].set(access.hidden_index, mode="drop")
