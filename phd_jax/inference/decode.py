"""Inference with a KV cache: exact and cheap prefill, then parallel hidden decoding.

Everything goes through `_run`: push a set of tokens, each with its (position, copy) coordinates,
through all layers against the cache. Each token reads the cached originals, the ring of recent
hidden tokens and the hidden tokens of its own run, masked by the one rule set `masks.visible`;
originals are written to the cache as they pass. Then:
- prefill = the originals of the whole prompt (a vanilla prefill), then the hidden copies of only
  the last few positions (docs/method.md, Inference);
- decode_step = the K copies of one new position in one forward.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phd_jax.data.tokenizers import ByteTokenizer
from phd_jax.inference.kv_cache import KVCache, init_cache
from phd_jax.masks import rope_positions, visible
from phd_jax.model.attention import masked_attention
from phd_jax.model.transformer import Transformer
from phd_jax.spec import PHDSpec


def _capacity(spec: PHDSpec, cache: KVCache) -> int:
  """Positions the cache can hold (the repeat baseline spends K slots per position)."""
  return cache.k.shape[2] // (spec.num_copies if spec.variant == "repeat" else 1)


def _run(model: Transformer, cache: KVCache, tokens: jax.Array, pos: jax.Array, copy: np.ndarray,
         valid: jax.Array) -> tuple[jax.Array, KVCache]:
  """tokens/pos/valid [B, T], copy [T] -> final hidden states [B, T, d] and the updated cache."""
  spec = model.spec
  kk, repeat, window = spec.num_copies, spec.variant == "repeat", spec.window
  b, t = tokens.shape
  run_keys = not repeat and bool((np.asarray(copy) >= 1).any())  # static: hidden keys in the run?
  copy = jnp.broadcast_to(jnp.asarray(copy, jnp.int32), (b, t))
  x = model.embed_at(tokens, copy)  # [B, T, d]
  rope = rope_positions(pos, copy, kk, model.position_scheme)

  # Where this run's K/V land in the cache: originals (every copy for repeat); else dropped.
  slots = cache.k.shape[2]
  writes = valid if repeat else valid & (copy == 0)
  slot = jnp.where(writes, pos * kk + copy if repeat else pos, slots)  # [B, T]
  # Coordinates (position m, copy i) and validity of every key: cache | ring | this run's hidden.
  s = jnp.arange(slots)
  cache_m, cache_i = (s // kk, s % kk) if repeat else (s, jnp.zeros_like(s))
  g = cache.window_index  # [B, W]
  kh = max(kk - 1, 1)
  key_m = [jnp.broadcast_to(cache_m, (b, slots)), g // kh] + ([pos] if run_keys else [])
  key_i = [jnp.broadcast_to(cache_i, (b, slots)), g % kh + 1] + ([copy] if run_keys else [])
  key_ok = [jnp.ones((b, slots), bool), g >= 0] + ([valid & (copy >= 1)] if run_keys else [])
  key_m, key_i, key_ok = (jnp.concatenate(x, axis=1) for x in (key_m, key_i, key_ok))
  mask = visible(spec, pos[:, :, None], copy[:, :, None], key_m[:, None], key_i[:, None])
  mask = mask & key_ok[:, None]  # [B, T, S + W (+ T)]
  rows = jnp.arange(b)[:, None]

  def layer_fn(layer, x, layer_cache):
    ck, cv, wk, wv = layer_cache
    q, k, v = layer.attn.project_qkv(x, rope)
    ck = ck.at[rows, slot].set(k.astype(ck.dtype), mode="drop")
    cv = cv.at[rows, slot].set(v.astype(cv.dtype), mode="drop")
    keys = jnp.concatenate([ck, wk] + ([k.astype(ck.dtype)] if run_keys else []), axis=1)
    vals = jnp.concatenate([cv, wv] + ([v.astype(cv.dtype)] if run_keys else []), axis=1)
    return layer.finish(x, masked_attention(q, keys, vals, mask)), (ck, cv, k, v)

  x, (ck, cv, run_k, run_v) = model.over_layers(
      layer_fn, x, (cache.k, cache.v, cache.window_k, cache.window_v))
  cache = cache.replace(k=ck, v=cv)
  if window:  # the run's last W hidden tokens enter the ring; older ones are dropped
    h = pos * kh + copy - 1
    hidden = valid & (copy >= 1)
    newest = jnp.max(jnp.where(hidden, h, -1), axis=1, keepdims=True)
    ring = jnp.where(hidden & (h > newest - window), h % window, window)  # window = dropped
    cache = cache.replace(
        window_k=cache.window_k.at[:, rows, ring].set(run_k.astype(ck.dtype), mode="drop"),
        window_v=cache.window_v.at[:, rows, ring].set(run_v.astype(cv.dtype), mode="drop"),
        window_index=cache.window_index.at[rows, ring].set(h, mode="drop"))
  return x, cache


def hidden_run_positions(spec: PHDSpec, num_layers: int, prompt_len: int,
                         truncate: bool = True) -> int:
  """How many final prompt positions need their hidden copies computed for an exact prefill.

  phd: 1. phd_swa: a hidden token reads at most D = max(W, K-2) hidden tokens back per layer, so
  the last N*D + 1 hidden tokens suffice (docs/method.md), rounded out to whole positions; with
  truncate=False, every position (the paper's way). phd_cswa: the last chunk, and no more than
  the same bound.
  """
  kh = spec.hidden_copies
  if spec.variant == "phd":
    return 1
  bound = 1 + math.ceil((num_layers * spec.hidden_reach - kh + 1) / kh)
  if spec.variant == "phd_swa":
    return min(prompt_len, bound if truncate else prompt_len)
  return min(prompt_len, spec.chunk, bound if truncate else spec.chunk)


def prefill(model: Transformer, tokens: jax.Array, cache: KVCache,
            lengths: jax.Array | None = None, *, truncate: bool = True):
  """Starts every row of the cache afresh from a prompt.

  tokens [B, P] int32, right-padded; lengths [B] (default P) the prompt lengths.
  Returns (logits [B, vocab] for the position after each prompt, cache).
  """
  spec = model.spec
  kk, repeat = spec.num_copies, spec.variant == "repeat"
  b, p = tokens.shape
  if p < 1:
    raise ValueError("prefill: the prompt is empty; it needs at least one token")
  if p > _capacity(spec, cache):
    raise ValueError(f"prefill: prompt of {p} tokens is longer than the cache "
                     f"(max_len={_capacity(spec, cache)} positions)")
  lengths = jnp.full((b,), p, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
  cache = cache.replace(length=jnp.zeros_like(cache.length),
                        window_index=jnp.full_like(cache.window_index, -1))

  # Stage 1: every position but the last, originals only (repeat: every copy). Only the cache is
  # kept, so no variant computes the top layer's outputs here: a vanilla prefill.
  if p > 1:
    n = np.repeat(np.arange(p - 1), kk) if repeat else np.arange(p - 1)
    copy = np.tile(np.arange(kk), p - 1) if repeat else np.zeros(p - 1, np.int64)
    pos = jnp.broadcast_to(jnp.asarray(n, jnp.int32), (b, n.size))
    _, cache = _run(model, cache, tokens[:, n], pos, copy, pos < lengths[:, None] - 1)

  # Stage 2: the last position's K copies in one run, with the hidden copies of the R-1
  # positions before it where the window needs them. The paper's way (phd_swa, truncate=False)
  # covers every position, in runs of at most the bound, aligned to end at each row's last
  # position; the ring carries the window from one run to the next.
  total = 1 if repeat or kk == 1 else hidden_run_positions(spec, model.num_layers, p, truncate)
  r = min(total, hidden_run_positions(spec, model.num_layers, p)) if total > 1 else 1
  runs = -(-total // r)

  def final_run(i, carry):
    cache, _ = carry
    last = lengths[:, None] - 1 - (runs - 1 - i) * r  # [B, 1]: this run's last position
    if repeat:
      pos, copy = jnp.repeat(last, kk, axis=1), np.arange(kk)
      valid = jnp.ones(pos.shape, bool)
    else:  # the original of `last` (only in the final run), then the hidden copies, by position
      hidden = jnp.repeat(last - r + 1 + jnp.arange(r), kk - 1, axis=1)
      pos = jnp.concatenate([last, hidden], axis=1)  # [B, 1 + R*(K-1)]
      copy = np.concatenate([[0], np.tile(np.arange(1, kk), r)])
      valid = (pos >= 0) & (jnp.asarray(np.arange(pos.shape[1]) > 0) | (i == runs - 1))
      if spec.variant == "phd_cswa":  # earlier chunks are invisible to the last one
        valid &= (pos // spec.chunk) == ((lengths - 1) // spec.chunk)[:, None]
    x, cache = _run(model, cache, jnp.take_along_axis(tokens, jnp.maximum(pos, 0), axis=1), pos,
                    copy, valid)
    return cache, x[:, -1:]  # copy K-1 of the last position

  carry = (cache, jnp.zeros((b, 1, model.embed.features), jnp.dtype(model.config.dtype)))
  cache, x_last = (final_run(0, carry) if runs == 1 else
                   jax.lax.fori_loop(0, runs, final_run, carry))
  return model.logits(x_last)[:, 0], cache.replace(length=lengths)


def decode_step(model: Transformer, tokens: jax.Array, cache: KVCache):
  """tokens [B]: the next token of each row. Its K copies run in one forward.

  Returns (logits [B, vocab] from copy K-1, cache with each row one position longer). The caller
  keeps lengths below the cache's max_len (generate checks this).
  """
  kk = model.spec.num_copies
  b = tokens.shape[0]
  pos = jnp.broadcast_to(cache.length[:, None], (b, kk))
  x, cache = _run(model, cache, jnp.broadcast_to(tokens[:, None], (b, kk)), pos,
                  np.arange(kk), jnp.ones((b, kk), bool))
  return model.logits(x[:, -1:])[:, 0], cache.replace(length=cache.length + 1)


def sample_logits(logits: jax.Array, key: jax.Array, temperature: float = 0.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
  """logits [B, V] -> ids [B]. temperature 0 is greedy; top_k 0 and top_p 1 disable those cuts."""
  if temperature == 0:
    return jnp.argmax(logits, axis=-1)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    desc = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(desc, axis=-1)
    keep = jnp.sum(jnp.cumsum(probs, axis=-1) - probs < top_p, axis=-1, keepdims=True)  # >= 1
    threshold = jnp.take_along_axis(desc, keep - 1, axis=-1)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1)


def _check_sampling(max_new_tokens: int, temperature: float, top_k: int, top_p: float) -> None:
  if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
    raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 0")
  if temperature < 0:
    raise ValueError(f"temperature={temperature} must be >= 0 (0 is greedy)")
  if not isinstance(top_k, (int, np.integer)) or top_k < 0:
    raise ValueError(f"top_k={top_k!r} must be an int >= 0 (0 disables it)")
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p={top_p} must be in (0, 1] (1 disables it)")


def generate(model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: int | None = ByteTokenizer.eos_id, seed: int = 0, max_len: int | None = None):
  """Samples continuations of a batch of prompts (lists of ids, lengths may differ).

  One jitted program: prefill, then a lax.while_loop of decode steps that stops when every row
  has produced `eos_id` or `max_new_tokens` tokens. Returns (ids [B, max_new_tokens] padded with
  eos_id after a row's end, lengths [B] of the continuations before EOS).
  """
  _check_sampling(max_new_tokens, temperature, top_k, top_p)
  lengths = np.array([len(p) for p in prompts], np.int32)
  if lengths.size == 0 or lengths.min() < 1:
    raise ValueError("generate: every prompt needs at least one token (got an empty prompt)")
  p = int(lengths.max())
  max_len = max_len or p + max_new_tokens
  if p + max_new_tokens > max_len:
    raise ValueError(f"generate: prompt of {p} tokens + max_new_tokens={max_new_tokens} exceeds "
                     f"max_len={max_len} positions")
  padded = np.zeros((len(prompts), p), np.int32)
  for row, prompt in enumerate(prompts):
    padded[row, :len(prompt)] = prompt
  pad_id = -1 if eos_id is None else eos_id
  graphdef, state = nnx.split(model)
  run = _generate_fn(graphdef, model.config, len(prompts), max_len, max_new_tokens,
                     float(temperature), int(top_k), float(top_p), pad_id)
  out, n = run(state, jnp.asarray(padded), jnp.asarray(lengths), jax.random.key(seed))
  return np.asarray(out), np.asarray(n)


@functools.lru_cache(maxsize=16)
def _generate_fn(graphdef, model_cfg, batch, max_len, max_new, temperature, top_k, top_p, eos):

  @jax.jit
  def run(state, prompts, lengths, key):
    model = nnx.merge(graphdef, state)
    logits, cache = prefill(model, prompts, init_cache(model_cfg, batch, max_len), lengths)
    out = jnp.full((batch, max_new), eos, jnp.int32)

    def cond(carry):
      i, _, _, _, done, _ = carry
      return (i < max_new) & ~jnp.all(done)

    def body(carry):
      i, cache, logits, out, done, key = carry
      key, sub = jax.random.split(key)
      tok = sample_logits(logits, sub, temperature, top_k, top_p).astype(jnp.int32)
      tok = jnp.where(done, eos, tok)
      out = out.at[:, i].set(tok)
      done = done | (tok == eos)
      logits, cache = decode_step(model, tok, cache)
      return i + 1, cache, logits, out, done, key

    carry = (0, cache, logits, out, jnp.zeros((batch,), bool), key)
    out = jax.lax.while_loop(cond, body, carry)[3]
    n = jnp.where(jnp.any(out == eos, axis=1), jnp.argmax(out == eos, axis=1), max_new)
    return out, n

  return run
