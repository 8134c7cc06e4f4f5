"""Validation loss (nats per token) and exact bits per byte, for any tokenizer.

bits/byte = (summed nats over the evaluated target tokens) / ln 2 / (their UTF-8 bytes), where a
target's bytes come from the tokenizer's `token_bytes` (EOS and other special tokens: 0). Sums, not
means, cross the device boundary, so batches of any token/byte mix combine exactly.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from phd_jax import sharding

LN2 = math.log(2.0)


def token_nats(model, batch: dict) -> jax.Array:
  """[B, L] next-token cross-entropy (nats) of each target."""
  logits = model(batch["inputs"])  # [B, L, vocab] fp32, last copy only
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])


def make_sums(graphdef: nnx.GraphDef, token_bytes: np.ndarray, state_sharding=None,
              batch_sharding=None):
  """Jitted (state, batch) -> (summed nats, target count, summed target bytes) of one batch."""
  table = jnp.asarray(token_bytes, jnp.int32)  # [vocab_of_tokenizer]

  @functools.partial(jax.jit, in_shardings=(state_sharding, batch_sharding))
  def sums(state, batch):
    model, _ = nnx.merge(graphdef, state)
    nats = token_nats(model, batch)  # [B, L]
    nbytes = table[batch["targets"]]  # [B, L]
    return nats.sum(), nats.size, nbytes.sum()

  return sums


class Validator:
  """Scores a fixed list of validation batches: `validator(state)` -> metrics for metrics.jsonl."""

  def __init__(self, graphdef, token_bytes, batches, mesh, axis_rules, state_sharding=None,
               batch_sharding=None):
    self.sums = make_sums(graphdef, token_bytes, state_sharding, batch_sharding)
    self.batches, self.mesh, self.axis_rules = batches, mesh, axis_rules

  def __call__(self, state) -> dict[str, float]:
    with sharding.activate(self.mesh, self.axis_rules):
      parts = jax.device_get([self.sums(state, b) for b in self.batches])
    nats = sum(float(p[0]) for p in parts)
    tokens = sum(int(p[1]) for p in parts)
    nbytes = sum(int(p[2]) for p in parts)
    return {"val_loss": nats / tokens,
            "val_bits_per_byte": nats / LN2 / nbytes if nbytes else float("nan")}
