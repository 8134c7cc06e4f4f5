"""Inference cost of PHD relative to vanilla: KV cache bytes, prefill time, decode-step time.

Same model (the quickstart shape) for every variant; timings are taken round-robin over the
variants after a warm-up (each prompt length on its own, the order rotated every round), and the
median is reported. The last line holds name=value pairs:
prefill_<variant>= at the longest-but-one prompt length (2048 by default) and decode_k<K>=.

  python experiments/bench_inference.py [--prompt_lens 512,2048,8192 --rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import quickstart
from phd_jax.decode import decode_step, prefill
from phd_jax.kv_cache import cache_bytes, init_cache
from phd_jax.model import Transformer

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


def model_cfg(variant, k, w, c):
  m = quickstart.get_config().model
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


def bench_decode(ks, cached, steps, rounds):
  runs = {}
  for k in [1] + ks:
    m = model_cfg("vanilla", 1, 0, 0) if k == 1 else model_cfg("phd_cswa", k, 16, 32)
    model = Transformer(m, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (1, cached)), jnp.int32)
    _, cache = nnx.jit(prefill)(model, tokens, init_cache(m, 1, cached + rounds * steps + 8))
    step = nnx.jit(decode_step, donate_argnums=2)
    token = jnp.zeros((1,), jnp.int32)
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--prompt_lens", default="512,2048,8192")
  parser.add_argument("--decode_ks", default="2,4,8,16")
  parser.add_argument("--cached", type=int, default=2048)
  parser.add_argument("--decode_steps", type=int, default=30)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  prompt_lens = [int(x) for x in args.prompt_lens.split(",")]
  ks = [int(x) for x in args.decode_ks.split(",")]
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; quickstart model, batch 1, "
        f"{args.rounds} interleaved rounds (median)", flush=True)

  print(f"\nKV cache bytes, batch 1, {args.cached} positions")
  vanilla = cache_bytes(model_cfg(*CACHE["vanilla"]), 1, args.cached)
  for name, spec in CACHE.items():
    b = cache_bytes(model_cfg(*spec), 1, args.cached)
    print(f"  {name:<12}{b:>12,d}  {b / vanilla:6.3f}x vanilla")

  pre = bench_prefill(prompt_lens, args.rounds)
  print(f"\nprefill time, x vanilla (K=2, W=16, C=32)\n  {'variant':<14}"
        + "".join(f"{p:>10}" for p in prompt_lens))
  for name in PREFILL:
    print(f"  {name:<14}" + "".join(f"{pre[p, name] / pre[p, 'vanilla']:>10.3f}"
                                     for p in prompt_lens))
  print("  vanilla ms    " + "".join(f"{pre[p, 'vanilla'] * 1e3:>10.1f}" for p in prompt_lens))

  dec = bench_decode(ks, args.cached, args.decode_steps, args.rounds)
  print(f"\ndecode step, phd_cswa vs vanilla, batch 1, {args.cached} cached positions")
  for k, t in dec.items():
    print(f"  K={k:<3} {t * 1e3:8.2f} ms  {t / dec[1]:6.3f}x vanilla")

  ref = prompt_lens[1] if len(prompt_lens) > 1 else prompt_lens[0]
  pairs = [f"prefill_{n}={pre[ref, n] / pre[ref, 'vanilla']:.3f}" for n in PREFILL if n != "vanilla"]
  pairs += [f"decode_k{k}={dec[k] / dec[1]:.3f}" for k in ks]
  print(" ".join(pairs))


if __name__ == "__main__":
  main()
