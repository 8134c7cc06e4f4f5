"""Text sampling by re-running the full forward pass over a sliding window.

No KV cache: simple and exact, used for the sample at the end of training. The cached,
parallel-hidden-decoding sampler lives in phd_jax.decode.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def sample_text(model: nnx.Module, prompt: np.ndarray, num_tokens: int, context: int,
                temperature: float, seed: int = 0) -> np.ndarray:
  """prompt [P] int -> the prompt plus `num_tokens` sampled ids; context = window length."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def next_token(state, window, length, key):
    logits = nnx.merge(graphdef, state)(window[None])[0, length - 1]  # [vocab]
    if temperature == 0:
      return jnp.argmax(logits)
    return jax.random.categorical(key, logits / temperature)

  out = [int(t) for t in prompt] or [0]
  key = jax.random.key(seed)
  for _ in range(num_tokens):
    recent = out[-context:]
    window = np.zeros(context, np.int32)
    window[:len(recent)] = recent
    key, sub = jax.random.split(key)
    out.append(int(next_token(state, window, len(recent), sub)))
  return np.asarray(out, np.int32)
