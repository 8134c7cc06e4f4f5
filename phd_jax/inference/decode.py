"""Inference with a KV cache: exact and cheap prefill, then parallel hidden decoding.

Every step is one cached forward of the model itself (`model(tokens, cache, coords)`): a set of
tokens, each with its (position, copy) coordinates, through the same blocks as training, each
reading and writing the cache (phd_jax/model/kv_cache.py). Then:
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
from flax import nnx, struct

from phd_jax.model.kv_cache import KVCache, TokenCoords, init_cache
from phd_jax.model.transformer import Transformer
from phd_jax.spec import PHDSpec


def _capacity(spec: PHDSpec, cache: KVCache) -> int:
  """Positions the cache can hold (the repeat baseline spends K slots per position)."""
  return cache.k.shape[2] // spec.cache_slots_per_position


def _coords(pos: jax.Array, copy, valid: jax.Array | None = None) -> TokenCoords:
  """pos [B, T], copy [T] (static), valid [B, T] (default: all) -> TokenCoords."""
  valid = jnp.ones(pos.shape, bool) if valid is None else valid
  return TokenCoords(pos=pos, valid=valid, copy=tuple(int(j) for j in copy))


def hidden_run_positions(spec: PHDSpec, num_layers: int, prompt_len: int,
                         truncate: bool = True) -> int:
  """How many final prompt positions need their hidden copies computed for an exact prefill.

  phd: 1. phd_swa: a hidden token reads at most D = max(W, K-2) hidden tokens back per layer, so
  the last N*D + 1 hidden tokens suffice (docs/method.md), rounded out to whole positions; with
  truncate=False, every position (the paper's way). phd_cswa: the last chunk, and no more than
  the same bound.
  """
  kh = spec.hidden_copies
  if not spec.has_window:
    return 1
  bound = 1 + math.ceil((num_layers * spec.hidden_reach - kh + 1) / kh)
  if not spec.chunked:
    return min(prompt_len, bound if truncate else prompt_len)
  return min(prompt_len, spec.chunk, bound if truncate else spec.chunk)


def prefill(model: Transformer, tokens: jax.Array, cache: KVCache,
            lengths: jax.Array | None = None, *, truncate: bool = True):
  """Starts every row of the cache afresh from a prompt.

  tokens [B, P] int32, right-padded; lengths [B] (default P) the prompt lengths.
  Returns (logits [B, vocab] for the position after each prompt, cache).
  """
  spec = model.spec
  kk, every_copy = spec.num_copies, spec.caches_every_copy
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
  # kept (the logits are dropped, so a jitted prefill never computes them): a vanilla prefill.
  if p > 1:
    n = np.repeat(np.arange(p - 1), kk) if every_copy else np.arange(p - 1)
    copy = np.tile(np.arange(kk), p - 1) if every_copy else np.zeros(p - 1, np.int64)
    pos = jnp.broadcast_to(jnp.asarray(n, jnp.int32), (b, n.size))
    _, cache = model(tokens[:, n], cache, _coords(pos, copy, pos < lengths[:, None] - 1))

  # Stage 2: the last position's K copies in one forward, with the hidden copies of the R-1
  # positions before it where the window needs them. The paper's way (phd_swa, truncate=False)
  # covers every position, in forwards of at most the bound positions, aligned to end at each
  # row's last position; the ring carries the window from one forward to the next.
  total = (1 if every_copy or kk == 1 else
           hidden_run_positions(spec, model.num_layers, p, truncate))
  r = min(total, hidden_run_positions(spec, model.num_layers, p)) if total > 1 else 1
  passes = -(-total // r)

  def hidden_pass(i, carry):
    cache, _ = carry
    last = lengths[:, None] - 1 - (passes - 1 - i) * r  # [B, 1]: this pass's last position
    if every_copy:
      pos, copy = jnp.repeat(last, kk, axis=1), np.arange(kk)
      valid = jnp.ones(pos.shape, bool)
    else:  # the original of `last` (only in the final pass), then the hidden copies, by position
      hidden = jnp.repeat(last - r + 1 + jnp.arange(r), kk - 1, axis=1)
      pos = jnp.concatenate([last, hidden], axis=1)  # [B, 1 + R*(K-1)]
      copy = np.concatenate([[0], np.tile(np.arange(1, kk), r)])
      valid = (pos >= 0) & (jnp.asarray(np.arange(pos.shape[1]) > 0) | (i == passes - 1))
      if spec.chunked:  # earlier chunks are invisible to the last one
        valid &= (pos // spec.chunk) == ((lengths - 1) // spec.chunk)[:, None]
    logits, cache = model(jnp.take_along_axis(tokens, jnp.maximum(pos, 0), axis=1), cache,
                          _coords(pos, copy, valid))
    return cache, logits  # from copy K-1 of the last position

  carry = (cache, jnp.zeros((b, model.config.vocab_size), jnp.float32))
  cache, logits = (hidden_pass(0, carry) if passes == 1 else
                   jax.lax.fori_loop(0, passes, hidden_pass, carry))
  return logits, cache.replace(length=lengths)


def decode_step(model: Transformer, tokens: jax.Array, cache: KVCache):
  """tokens [B]: the next token of each row. Its K copies run in one forward.

  Returns (logits [B, vocab] from copy K-1, cache with each row one position longer). The caller
  keeps lengths below the cache's max_len (generate checks this).
  """
  kk = model.spec.num_copies
  b = tokens.shape[0]
  pos = jnp.broadcast_to(cache.length[:, None], (b, kk))
  logits, cache = model(jnp.broadcast_to(tokens[:, None], (b, kk)), cache,
                        _coords(pos, np.arange(kk)))
  return logits, cache.replace(length=cache.length + 1)


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


@struct.dataclass
class DecodeState:
  """What generate's decode loop carries from one step to the next."""
  step: jax.Array  # [] int32: tokens sampled so far
  cache: KVCache
  logits: jax.Array  # [B, vocab] float32: the next token's logits
  out: jax.Array  # [B, max_new] int32: the sampled ids, eos after a row's end
  done: jax.Array  # [B] bool: the row has produced eos
  key: jax.Array  # the PRNG key of the next sample


def generate(model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             eos_id: int | None, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             seed: int = 0, max_len: int | None = None):
  """Samples continuations of a batch of prompts (lists of ids, lengths may differ).

  eos_id: the end-of-document id of the run's tokenizer (`tok.eos_id`), at which a row stops;
  None: never stop early. There is no default: a byte-level default would let a BPE run sample
  past its end marker.
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
  sample = _generate_fn(graphdef, model.config, len(prompts), max_len, max_new_tokens,
                        float(temperature), int(top_k), float(top_p), pad_id)
  out, n = sample(state, jnp.asarray(padded), jnp.asarray(lengths), jax.random.key(seed))
  return np.asarray(out), np.asarray(n)


@functools.lru_cache(maxsize=16)
def _generate_fn(graphdef, model_cfg, batch, max_len, max_new, temperature, top_k, top_p, eos):

  @jax.jit
  def sample(state, prompts, lengths, key):
    model = nnx.merge(graphdef, state)
    logits, cache = prefill(model, prompts, init_cache(model_cfg, batch, max_len), lengths)

    def cond(s: DecodeState):
      return (s.step < max_new) & ~jnp.all(s.done)

    def body(s: DecodeState) -> DecodeState:
      key, sub = jax.random.split(s.key)
      tok = sample_logits(s.logits, sub, temperature, top_k, top_p).astype(jnp.int32)
      tok = jnp.where(s.done, eos, tok)
      logits, cache = decode_step(model, tok, s.cache)
      return DecodeState(step=s.step + 1, cache=cache, logits=logits,
                         out=s.out.at[:, s.step].set(tok), done=s.done | (tok == eos), key=key)

    start = DecodeState(step=jnp.zeros((), jnp.int32), cache=cache, logits=logits,
                        out=jnp.full((batch, max_new), eos, jnp.int32),
                        done=jnp.zeros((batch,), bool), key=key)
    out = jax.lax.while_loop(cond, body, start).out
    n = jnp.where(jnp.any(out == eos, axis=1), jnp.argmax(out == eos, axis=1), max_new)
    return out, n

  return sample
