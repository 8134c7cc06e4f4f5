"""The train-step timings of bench_train and bench_device: one model's jitted train step on a
constant batch, each step waited for on its own, so a step's time is its device time plus one
dispatch (what a training run's step costs when the host keeps up)."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections

from phd_jax.train.state import create_state, make_train_step


def build_step(cfg: ml_collections.ConfigDict) -> list:
  """[train_step, state, batch] of cfg at cfg.train's batch_size x seq_len (all ones): the run
  that `run_step` advances. Nothing is compiled yet."""
  graphdef, state = create_state(cfg)
  shape = (cfg.train.batch_size, cfg.train.seq_len)
  batch = {"inputs": jnp.ones(shape, jnp.int32), "targets": jnp.ones(shape, jnp.int32)}
  return [make_train_step(graphdef, cfg.train), state, batch]


def run_step(run: list) -> float:
  """Seconds of one step of `run` ([train_step, state, batch]), waited for; keeps the new state
  in `run` (the step donates the old one). The first call compiles."""
  step, state, batch = run
  t = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  run[1] = state
  return time.perf_counter() - t
