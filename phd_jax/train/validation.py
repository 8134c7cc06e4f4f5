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
from flax import nnx

from phd_jax.config.defaults import LOSS_CHUNK
from phd_jax.model import sharding
from phd_jax.model.losses import chunk_sums

LN2 = math.log(2.0)


def make_sums(graphdef: nnx.GraphDef, token_bytes: np.ndarray, state_sharding=None,
              batch_sharding=None, loss_chunk: int = LOSS_CHUNK):
  """Jitted (state, batch) -> (summed nats, target count, summed target bytes) of one batch.

  The nats come from the training loss's chunked head (losses.chunk_sums): whole [B, L, vocab]
  logits are never built, which matters at a 100k vocabulary.
  """
  table = jnp.asarray(token_bytes, jnp.int32)  # [vocab_of_tokenizer]

  @functools.partial(jax.jit, in_shardings=(state_sharding, batch_sharding))
  def sums(state, batch):
    model, _ = nnx.merge(graphdef, state)
    targets = batch["targets"]  # [B, L]
    nats, _ = chunk_sums(model.logits, model.hidden(batch["inputs"]), targets, loss_chunk)
    return nats, targets.size, table[targets].sum()

  return sums


class Validator:
  """Scores a fixed list of validation batches: `validator(state)` -> metrics for metrics.jsonl."""

  def __init__(self, graphdef, token_bytes, batches, mesh, axis_rules, state_sharding=None,
               batch_sharding=None, loss_chunk: int = LOSS_CHUNK):
    self.sums = make_sums(graphdef, token_bytes, state_sharding, batch_sharding, loss_chunk)
    self.batches, self.mesh, self.axis_rules = batches, mesh, axis_rules

  def __call__(self, state) -> dict[str, float]:
    return self.score(state, self.batches)

  def score(self, state, batches: list) -> dict[str, float]:
    """The metrics of `batches` (any list of the validation batches' shape)."""
    with sharding.activate(self.mesh, self.axis_rules):
      parts = jax.device_get([self.sums(state, b) for b in batches])
    nats = sum(float(p[0]) for p in parts)
    tokens = sum(int(p[1]) for p in parts)
    nbytes = sum(int(p[2]) for p in parts)
    return {"val_loss": nats / tokens,
            "val_bits_per_byte": nats / LN2 / nbytes if nbytes else float("nan")}
