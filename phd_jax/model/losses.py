"""The training loss: next-token cross-entropy (plus OLMo2's optional z-loss) over token chunks.

Why chunks: with the paper's ~100k vocabulary the float32 logits of one 4096-token sequence are
~1.6 GiB, and their gradient as much again. Here the LM head runs on `train.loss_chunk` positions
at a time inside a `lax.scan` whose body is rematerialised (`jax.checkpoint`): the forward keeps
only per-chunk sums, the backward recomputes one chunk's logits, takes its gradient and drops it.
So at most one chunk's [B, chunk, vocab] logits and their gradient are alive, for the price of
a second LM-head forward. Loss and gradients equal the whole-logits computation (same math, only
summed in another order).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from phd_jax.config.defaults import LOSS_CHUNK
from phd_jax.model.sharding import constrain


def chunk_sums(logits_fn, h: jax.Array, targets: jax.Array, chunk: int
               ) -> tuple[jax.Array, jax.Array]:
  """(sum of cross-entropy, sum of logsumexp^2) over all B*L tokens.

  logits_fn: states [B, c, d] -> logits [B, c, vocab] float32 (the model's head).
  h [B, L, d] last-copy states, targets [B, L] int. The length is padded up to whole chunks;
  padded tokens weigh 0.
  """
  b, seq_len, d = h.shape
  c = max(1, min(chunk, seq_len))
  n = -(-seq_len // c)
  pad = n * c - seq_len
  h = jnp.pad(h, ((0, 0), (0, pad), (0, 0))).reshape(b, n, c, d).swapaxes(0, 1)  # [n, B, c, d]
  tg = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, c).swapaxes(0, 1)  # [n, B, c]
  weight = (jnp.arange(n * c) < seq_len).astype(jnp.float32).reshape(n, 1, c)  # [n, 1, c]

  @jax.checkpoint  # nothing of the chunk is saved: the backward recomputes its logits
  def piece(h_c, t_c, w_c):
    h_c = constrain(h_c, ("batch", "length", "act_embed"))
    logits = logits_fn(h_c)  # [B, c, vocab] float32
    lse = jax.nn.logsumexp(logits, axis=-1)  # [B, c]
    target_logit = jnp.take_along_axis(logits, t_c[..., None], axis=-1)[..., 0]  # [B, c]
    return jnp.sum((lse - target_logit) * w_c), jnp.sum(jnp.square(lse) * w_c)

  def body(carry, xs):
    ce, z = piece(*xs)
    return (carry[0] + ce, carry[1] + z), None

  zero = jnp.zeros((), jnp.float32)
  (ce_sum, z_sum), _ = jax.lax.scan(body, (zero, zero), (h, tg, weight))
  return ce_sum, z_sum


def lm_loss(model, batch: dict, t: ml_collections.ConfigDict | None = None
            ) -> tuple[jax.Array, dict]:
  """Mean next-token cross-entropy (nats) + z_loss * mean(logsumexp^2), and its parts.

  The loss is taken on the last copy of each position only (the model's `hidden` returns just
  those). aux: {"ce": mean cross-entropy, "z_loss": the z-loss term as added (0 when off)}.
  """
  chunk, z_coef = (LOSS_CHUNK, 0.0) if t is None else (t.loss_chunk, float(t.z_loss))
  h = model.hidden(batch["inputs"])  # [B, L, d]
  ce_sum, z_sum = chunk_sums(model.logits, h, batch["targets"], chunk)
  count = batch["targets"].size
  ce = ce_sum / count
  z = z_coef * z_sum / count
  return ce + z, {"ce": ce, "z_loss": z}
