"""The inference timings of bench_inference, latency and bench_device: prefill and decode-step
time per variant.

Same model (the quickstart shape unless told otherwise) for every variant, batch 1 unless told
otherwise; each variant is compiled and warmed up first, then timed round-robin (the order
rotated every round) so that machine noise hits every variant alike, and the median is kept.
"""
from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from configs import quickstart
from phd_jax.inference.decode import decode_step, prefill
from phd_jax.model.kv_cache import init_cache
from phd_jax.model.transformer import Transformer

PREFILL = {  # name: (variant, K, W, C, truncate)
    "vanilla": ("vanilla", 1, 0, 0, True),
    "phd": ("phd", 2, 0, 0, True),
    "phd_cswa": ("phd_cswa", 2, 16, 32, True),
    "phd_swa": ("phd_swa", 2, 16, 0, True),
    "phd_swa_full": ("phd_swa", 2, 16, 0, False),  # the paper's way: hidden copies everywhere
}
CACHE = {"vanilla": ("vanilla", 1, 0, 0), "phd": ("phd", 2, 0, 0),
         "phd_swa": ("phd_swa", 2, 16, 0), "phd_cswa": ("phd_cswa", 2, 16, 32),
         "repeat_k2": ("repeat", 2, 0, 0), "repeat_k4": ("repeat", 4, 0, 0)}


def model_cfg(variant, k, w, c, base: ml_collections.ConfigDict | None = None):
  """The model config of a variant: `base` (default: the quickstart model) with its PHD fields."""
  m = (base or quickstart.get_config().model).copy_and_resolve_references()
  m.phd.update(variant=variant, num_copies=k, window=w, chunk=c)
  return m


def timed(fn, *args):
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t


def bench_prefill(prompt_lens, rounds, variants=PREFILL):
  """Median prefill seconds per (prompt length, name of `variants`)."""
  runs = {}
  for p in prompt_lens:
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (1, p)), jnp.int32)
    for name, (variant, k, w, c, truncate) in variants.items():
      m = model_cfg(variant, k, w, c)
      model = Transformer(m, rngs=nnx.Rngs(0))
      fn = nnx.jit(lambda mod, t, cache, tr=truncate: prefill(mod, t, cache, truncate=tr)[0])
      cache = init_cache(m, 1, p)
      args = (model, tokens, cache)
      timed(fn, *args)  # compile
      runs[p, name] = (fn, args)
    print(f"  compiled prefill at {p}", flush=True)
  times = {key: [] for key in runs}
  for p in prompt_lens:  # each length on its own, so a long prefill's memory churn stays apart
    for r in range(rounds):
      names = list(variants)[r % len(variants):] + list(variants)[:r % len(variants)]  # rotate
      for name in names:
        fn, args = runs[p, name]
        times[p, name].append(timed(fn, *args))
  return {key: statistics.median(ts) for key, ts in times.items()}


def bench_decode(ks, cached, steps, rounds, batch: int = 1,
                 base: ml_collections.ConfigDict | None = None):
  """Median seconds per decode step (one new token per sequence of `batch`) for each K of `ks`
  (phd_cswa, W=16, C=32) and K=1 (vanilla); `base`: the model (default: quickstart's)."""
  runs = {}
  for k in [1] + ks:
    m = model_cfg("vanilla", 1, 0, 0, base) if k == 1 else model_cfg("phd_cswa", k, 16, 32, base)
    model = Transformer(m, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, cached)), jnp.int32)
    _, cache = nnx.jit(prefill)(model, tokens, init_cache(m, batch, cached + rounds * steps + 8))
    step = nnx.jit(decode_step, donate_argnums=2)
    token = jnp.zeros((batch,), jnp.int32)
    logits, cache = step(model, token, cache)  # compile
    runs[k] = [step, model, token, cache]
  times = {k: [] for k in runs}
  for r in range(rounds):
    order = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]  # rotate the order
    for k in order:
      run = runs[k]
      step, model, token, cache = run
      t = time.perf_counter()
      for _ in range(steps):
        logits, cache = step(model, token, cache)
      jax.block_until_ready(logits)
      times[k].append((time.perf_counter() - t) / steps)
      run[3] = cache
  return {k: statistics.median(ts) for k, ts in times.items()}
