"""Gradient accumulation: the global batch as `train.grad_accum_steps` microbatches, scanned.

Every microbatch holds the same number of tokens and the loss is a per-token mean, so the mean
of the microbatches' losses and gradients is the one-big-batch loss and gradient (up to float
rounding); only the activations of one microbatch are alive at a time.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from phd_jax.model import sharding


def microbatches(x: jax.Array, n: int) -> jax.Array:
  """[B, ...] -> [n, B/n, ...], microbatch i = rows i, i+n, i+2n, ...

  Strided, so each device's contiguous block of rows splits into its own share of every
  microbatch: no data moves between devices.
  """
  x = x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)  # [n, B/n, ...]
  return sharding.constrain(x, (None, "batch") + (None,) * (x.ndim - 2))


def loss_and_grads(loss_fn: Callable, model: nnx.Module, batch: dict,
                   t: ml_collections.ConfigDict) -> tuple[jax.Array, dict, nnx.State]:
  """(loss, aux, grads of the nnx.Params) of `loss_fn(model, batch, t) -> (loss, aux)`."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def pure(params: nnx.State, batch: dict):
    return loss_fn(nnx.merge(graphdef, params, rest), batch, t)

  value_and_grad = jax.value_and_grad(pure, has_aux=True)
  n = t.grad_accum_steps
  if n == 1:
    (loss, aux), grads = value_and_grad(params, batch)
    return loss, aux, grads

  def add(total, micro):
    (loss, aux), grads = value_and_grad(params, micro)
    return jax.tree.map(jnp.add, total, (loss, aux, grads)), None

  micro = {k: microbatches(v, n) for k, v in batch.items()}
  loss_shape, aux_shape = jax.eval_shape(pure, params, {k: v[0] for k, v in micro.items()})
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss_shape, aux_shape, params))
  total, _ = jax.lax.scan(add, zeros, micro)
  loss, aux, grads = jax.tree.map(lambda x: x / n, total)
  return loss, aux, grads
