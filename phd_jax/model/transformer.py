"""The PHD decoder: an OLMo2-style transformer whose every token runs K times.

OLMo2, as the paper trained (and exactly: phd_jax/interop/olmo2.py loads released OLMo2
weights): RoPE (rotate-half), RMSNorm on each block's *output* (reordered norm), QK-norm over the
whole q and k projections (`model.qk_norm`), grouped-query attention, SwiGLU, no biases. The K
copies live in the grouped layout (originals, then the hidden stream; docs/method.md) from the
embedding to the last block, and only the last copy of each position reaches the LM head.

Training, prefill and decoding all run through the same `__call__` of the same blocks: given a
KV cache (phd_jax/model/kv_cache.py), a block's attention reads and writes it instead of
attending over whole sequences, and everything else in the block is the same code.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from phd_jax.config import model_spec
from phd_jax.masks import (
  expand_copies,
  last_copy_slice,
  position_ids,
  rope_positions,
  token_coords,
)
from phd_jax.model.attention import attention
from phd_jax.model.kv_cache import (
  KVCache,
  LayerCache,
  TokenCoords,
  cache_access,
  cached_attention,
  written_ring_index,
)
from phd_jax.model.sharding import constrain
from phd_jax.spec import PHDSpec


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding, rotate-half form. x [B, T, H, D], positions [T] or [B, T]."""
  half = x.shape[-1] // 2
  freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [D/2]
  angle = positions.astype(jnp.float32)[..., None] * freqs  # [(B,) T, D/2]
  sin, cos = jnp.sin(angle)[..., None, :], jnp.cos(angle)[..., None, :]  # [(B,) T, 1, D/2]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _dtypes(m: ml_collections.ConfigDict) -> dict:
  return dict(dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype))


def _init(m: ml_collections.ConfigDict, *names: str):
  """Normal init, annotated with logical axis names (config.mesh.rules maps them to devices)."""
  return nnx.with_partitioning(nnx.initializers.normal(m.init_std), names)


_LAYERS = {nnx.PARTITION_NAME: "layers"}  # the stacked axis of scanned layers


class Attention(nnx.Module):
  """Grouped-query attention with QK-norm and RoPE, and its settings: the spec, the training
  path (`model.attention_impl`) and that path's block sizes. Without a cache it attends over whole
  sequences in the grouped layout; with one, over the cache (`cached_attention`)."""

  def __init__(self, m: ml_collections.ConfigDict, spec: PHDSpec, *, rngs: nnx.Rngs):
    self.spec, self.impl, self.theta = spec, m.attention_impl, m.rope_theta
    self.block_sizes = (m.pallas_block_q, m.pallas_block_kv)
    self.xla_block = m.xla_block
    self.num_heads, self.num_kv_heads, self.head_dim = m.num_heads, m.num_kv_heads, m.head_dim
    dense = functools.partial(nnx.Linear, use_bias=False, rngs=rngs, **_dtypes(m))
    self.q_proj = dense(m.d_model, m.num_heads * m.head_dim, kernel_init=_init(m, "embed", "heads"))
    kv = functools.partial(dense, m.d_model, m.num_kv_heads * m.head_dim,
                           kernel_init=_init(m, "embed", "kv_heads"))
    self.k_proj, self.v_proj = kv(), kv()
    self.o_proj = dense(m.num_heads * m.head_dim, m.d_model, kernel_init=_init(m, "heads", "embed"))
    # OLMo2 ("full") normalises the whole projection [H*D]; "head" each head's [D] on its own.
    self.qk_norm = m.qk_norm
    norm = functools.partial(nnx.RMSNorm, epsilon=m.norm_eps, rngs=rngs, **_dtypes(m))
    full = m.qk_norm == "full"
    self.q_norm = None if m.qk_norm == "none" else norm(
        m.num_heads * m.head_dim if full else m.head_dim)
    self.k_norm = None if m.qk_norm == "none" else norm(
        m.num_kv_heads * m.head_dim if full else m.head_dim)

  def project_qkv(self, x: jax.Array, positions: jax.Array):
    """x [B, T, d] -> q [B, T, Hq, D], k/v [B, T, Hkv, D], normed and rotated."""
    b, t, _ = x.shape
    q, k = self.q_proj(x), self.k_proj(x)  # [B, T, Hq*D], [B, T, Hkv*D]
    if self.qk_norm == "full":
      q, k = self.q_norm(q), self.k_norm(k)
    q = q.reshape(b, t, self.num_heads, self.head_dim)
    k = k.reshape(b, t, self.num_kv_heads, self.head_dim)
    if self.qk_norm == "head":
      q, k = self.q_norm(q), self.k_norm(k)
    v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    return apply_rope(q, positions, self.theta), apply_rope(k, positions, self.theta), v

  def __call__(self, x: jax.Array, positions: jax.Array,
               cache: LayerCache | None = None) -> tuple[jax.Array, LayerCache | None]:
    """x [B, T, d] -> (output projection [B, T, d], the cache with this layer's K/V written)."""
    b, t, _ = x.shape
    q, k, v = self.project_qkv(x, positions)
    if cache is None:
      out = attention(q, k, v, self.spec, self.impl, self.block_sizes, self.xla_block)
    else:
      out, cache = cached_attention(q, k, v, cache)
    return self.o_proj(out.reshape(b, t, -1)), cache  # out [B, T, Hq, D]


class MLP(nnx.Module):
  """SwiGLU."""

  def __init__(self, m: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    dense = functools.partial(nnx.Linear, use_bias=False, rngs=rngs, **_dtypes(m))
    self.gate = dense(m.d_model, m.mlp_dim, kernel_init=_init(m, "embed", "mlp"))
    self.up = dense(m.d_model, m.mlp_dim, kernel_init=_init(m, "embed", "mlp"))
    self.down = dense(m.mlp_dim, m.d_model, kernel_init=_init(m, "mlp", "embed"))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


class Block(nnx.Module):
  """x + norm(attn(x)), then + norm(mlp(.)): OLMo2's reordered norm."""

  def __init__(self, m: ml_collections.ConfigDict, spec: PHDSpec, *, rngs: nnx.Rngs):
    norm = functools.partial(nnx.RMSNorm, m.d_model, epsilon=m.norm_eps, rngs=rngs, **_dtypes(m))
    self.attn, self.attn_norm = Attention(m, spec, rngs=rngs), norm()
    self.mlp, self.mlp_norm = MLP(m, rngs=rngs), norm()

  def __call__(self, x: jax.Array, positions: jax.Array,
               cache: LayerCache | None = None) -> tuple[jax.Array, LayerCache | None]:
    """x [B, T, d] at RoPE positions ([T] or [B, T]) -> (x [B, T, d], cache).

    Without a cache: whole sequences, T = K*L in the grouped layout, and (x, None) comes back.
    With one: the T tokens of a cached forward, and this layer's cache comes back updated.
    """
    a, cache = self.attn(x, positions, cache)
    x = x + self.attn_norm(a)
    x = x + self.mlp_norm(self.mlp(x))
    return constrain(x, ("batch", "length", "act_embed")), cache


class Transformer(nnx.Module):
  """tokens [B, L] int32 -> logits [B, L, vocab] (float32) from the last copy of each position."""

  def __init__(self, m: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    # Variables carry logical sharding names only; the train step's jit places them on a mesh.
    with nnx.use_eager_sharding(False):
      self._build(m, rngs)

  def _build(self, m: ml_collections.ConfigDict, rngs: nnx.Rngs) -> None:
    self.spec = model_spec(m)
    self.config = ml_collections.FrozenConfigDict(m)  # hashable: decode builds caches from it
    self.num_layers, self.remat, self.scan_layers = m.num_layers, m.remat, m.scan_layers
    self.position_scheme, self.tie_embeddings = m.phd.position_scheme, m.tie_embeddings
    self.embed = nnx.Embed(m.vocab_size, m.d_model, rngs=rngs, **_dtypes(m),
                           embedding_init=_init(m, "vocab", "embed"))
    self.copy_embed = nnx.Param(
        jnp.zeros((self.spec.num_copies, m.d_model), jnp.dtype(m.param_dtype)),
        out_sharding=("copies", "embed")) if m.phd.copy_embedding else None
    if m.scan_layers:
      @nnx.split_rngs(splits=m.num_layers)
      @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata=_LAYERS)
      def stacked(rngs: nnx.Rngs) -> Block:
        return Block(m, self.spec, rngs=rngs)
      self.layers = stacked(rngs)
    else:
      self.layers = nnx.List([Block(m, self.spec, rngs=rngs) for _ in range(m.num_layers)])
    self.final_norm = nnx.RMSNorm(m.d_model, epsilon=m.norm_eps, rngs=rngs, **_dtypes(m))
    self.lm_head = None if m.tie_embeddings else nnx.Linear(
        m.d_model, m.vocab_size, use_bias=False, rngs=rngs, **_dtypes(m),
        kernel_init=_init(m, "embed", "vocab"))

  def embed_at(self, tokens: jax.Array, copy) -> jax.Array:
    """Input vectors of tokens [B, T] that are copies `copy` ([T] or [B, T]) -> [B, T, d].

    The table is gathered whole along `embed` first (vocab stays split): a gather from a table
    split on the feature axis into batch-split rows is a resharding GSPMD can only do by
    replicating everything ("involuntary full rematerialization").
    """
    table = self.embed.embedding[...].astype(self.embed.dtype or self.embed.param_dtype)
    table = constrain(table, ("vocab", None))  # [vocab, d]
    x = constrain(jnp.take(table, tokens, axis=0), ("batch", "length", "act_embed"))
    if self.copy_embed is not None:
      x = x + self.copy_embed[...][copy].astype(x.dtype)
    return x

  def embed_copies(self, tokens: jax.Array) -> jax.Array:
    """tokens [B, L] -> inputs of the grouped layout [B, K*L, d]."""
    _, copy = token_coords(tokens.shape[1], self.spec.num_copies)
    return self.embed_at(expand_copies(tokens, self.spec.num_copies, axis=1), copy)

  def over_layers(self, fn: Callable, x: jax.Array, per_layer=None):
    """x, per-layer states -> fn(layer, x, state) -> (x, new state) applied over depth.

    States are pytrees stacked on axis 0 (one entry per layer): the decode cache uses this.
    Scanned models run one compiled block under jax.lax.scan; others loop in Python. `fn` must
    not mutate the layer. The layers are split into graphdef/state here and merged inside the
    jax-level transforms (lax.scan, jax.checkpoint), never handed to nnx transforms: that keeps
    this callable from any trace (jit, while_loop, grad) without mixing NNX trace levels.
    """
    def apply(graphdef, layer_state, x, state):
      return fn(nnx.merge(graphdef, layer_state), x, state)
    if self.remat:
      apply = jax.checkpoint(apply, static_argnums=(0,))
    if self.scan_layers:
      graphdef, stacked = nnx.split(self.layers)  # every leaf [N, ...]
      body = lambda x, inputs: apply(graphdef, inputs[0], x, inputs[1])
      return jax.lax.scan(body, x, (stacked, per_layer))
    outs = []
    for idx, layer in enumerate(self.layers):
      graphdef, layer_state = nnx.split(layer)
      x, out = apply(graphdef, layer_state, x, jax.tree.map(lambda a: a[idx], per_layer))
      outs.append(out)
    return x, jax.tree.map(lambda *a: jnp.stack(a), *outs)

  def logits(self, x: jax.Array) -> jax.Array:
    """Last-copy states [..., d] (before the final norm) -> logits [..., vocab] float32."""
    x = self.final_norm(x)
    out = self.embed.attend(x) if self.tie_embeddings else self.lm_head(x)
    return out.astype(jnp.float32)

  def hidden(self, tokens: jax.Array) -> jax.Array:
    """tokens [B, L] -> states of the last copy of each position [B, L, d], before the final
    norm: the loss turns them into logits a chunk at a time (phd_jax/model/losses.py)."""
    seq_len, k = tokens.shape[1], self.spec.num_copies
    positions = jnp.asarray(position_ids(seq_len, k, self.position_scheme))  # [K*L]
    x, _ = self.over_layers(lambda layer, x, _: layer(x, positions),
                            self.embed_copies(tokens))  # [B, K*L, d]
    start, stop, step = last_copy_slice(seq_len, k)
    return x[:, start:stop:step]  # [B, L, d]

  def __call__(self, tokens: jax.Array, cache: KVCache | None = None,
               coords: TokenCoords | None = None) -> jax.Array | tuple[jax.Array, KVCache]:
    """The forward pass, over whole sequences or over a KV cache.

    model(tokens [B, L]) -> logits [B, L, vocab] of the last copy of each position (training,
    evaluation, the reference every decode test compares with).
    model(tokens [B, T], cache, coords) -> (logits [B, vocab] of the last of the T tokens, the
    cache with their K/V written in): T tokens at any (position, copy) coordinates, e.g. the K
    copies of the newest position (a decode step ends with copy K-1, whose logits predict the
    next token). The cache's `length` is the caller's to advance (phd_jax/inference/decode.py).
    """
    if cache is None:
      return self.logits(self.hidden(tokens))  # [B, L, vocab]
    if coords is None:
      raise ValueError("a forward over a KV cache needs the tokens' coords (TokenCoords: the "
                       "position and copy of each token)")
    copy = jnp.asarray(coords.copy, jnp.int32)  # [T]
    x = self.embed_at(tokens, copy)  # [B, T, d]
    rope = rope_positions(coords.pos, copy, self.spec.num_copies, self.position_scheme)  # [B, T]
    access = cache_access(self.spec, cache, coords)

    def layer_fn(layer: Block, x: jax.Array, kv: tuple) -> tuple[jax.Array, tuple]:
      x, new = layer(x, rope, LayerCache(*kv, access=access))
      return x, (new.k, new.v, new.window_k, new.window_v)

    x, (k, v, window_k, window_v) = self.over_layers(
        layer_fn, x, (cache.k, cache.v, cache.window_k, cache.window_v))
    cache = cache.replace(k=k, v=v, window_k=window_k, window_v=window_v,
                          window_index=written_ring_index(cache, access))
    return self.logits(x[:, -1]), cache  # [B, vocab]


def param_count(model: nnx.Module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
