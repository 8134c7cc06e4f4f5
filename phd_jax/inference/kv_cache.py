"""The decode-time KV cache: a pytree of arrays, passed into each step and returned.

Per layer it holds what docs/method.md says inference keeps, and nothing else:
- the originals' K/V, one slot per position: exactly the vanilla cache (the `repeat` baseline
  keeps all K copies, slot n*K + j: that K-fold cost is what it exists to show);
- for phd_swa / phd_cswa, a ring buffer of the last W hidden tokens' K/V. Each ring slot records
  the hidden-stream index it holds, so the window and chunk rules mask it like any other key.
Hidden K/V outside the window are dropped after each step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from phd_jax.config import validate_model_config
from phd_jax.model.sharding import constrain


@struct.dataclass
class KVCache:
  k: jax.Array  # [N, B, S, Hkv, D]: originals, S = max_len (repeat: K * max_len)
  v: jax.Array  # [N, B, S, Hkv, D]
  window_k: jax.Array  # [N, B, W, Hkv, D]: last W hidden tokens (W = 0 for phd, vanilla, repeat)
  window_v: jax.Array  # [N, B, W, Hkv, D]
  window_index: jax.Array  # [B, W] int32: hidden-stream index in each ring slot, -1 = empty
  length: jax.Array  # [B] int32: positions cached per row


def init_cache(model_cfg: ml_collections.ConfigDict, batch_size: int, max_len: int) -> KVCache:
  """An empty cache for `batch_size` rows of up to `max_len` positions (original tokens)."""
  spec = validate_model_config(model_cfg)
  if not isinstance(max_len, int) or max_len < 1:
    raise ValueError(f"max_len={max_len!r} must be an int >= 1 (it counts positions)")
  n, h, d = model_cfg.num_layers, model_cfg.num_kv_heads, model_cfg.head_dim
  dtype = jnp.dtype(model_cfg.dtype)
  slots = max_len * (spec.num_copies if spec.variant == "repeat" else 1)
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
