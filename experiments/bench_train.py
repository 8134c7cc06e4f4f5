"""Train-step time of the PHD variants relative to vanilla: same model, same batch, one run.

Steps of all variants are timed interleaved (round-robin) after a warm-up, so machine noise hits
every variant alike; the median per variant is reported. Ratios are given against our vanilla
and against a peer: the same vanilla model whose attention is `jax.nn.dot_product_attention`
(causal; attention_impl="jax"). The last line holds the ratios to the peer as name=value pairs.

  python experiments/bench_train.py [--seq_len 1024 --batch_size 2 --rounds 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from configs import quickstart
from phd_jax.train import create_state, make_train_step

VARIANTS = {  # name: (variant, K, W, C)
    "peer": ("vanilla", 1, 0, 0),  # attention by jax.nn.dot_product_attention
    "vanilla": ("vanilla", 1, 0, 0),
    "phd_k2": ("phd", 2, 0, 0),
    "phd_k3": ("phd", 3, 0, 0),
    "phd_cswa_k2": ("phd_cswa", 2, 16, 32),
    "repeat_k2": ("repeat", 2, 0, 0),
}


def build(name: str, args: argparse.Namespace):
  cfg = quickstart.get_config()
  variant, k, w, c = VARIANTS[name]
  cfg.model.phd.update(variant=variant, num_copies=k, window=w, chunk=c)
  cfg.model.attention_impl = "jax" if name == "peer" else args.attention_impl
  cfg.train.update(batch_size=args.batch_size, seq_len=args.seq_len)
  graphdef, state = create_state(cfg)
  train_step = make_train_step(graphdef, cfg.train)
  batch = {"inputs": jnp.ones((args.batch_size, args.seq_len), jnp.int32),
           "targets": jnp.ones((args.batch_size, args.seq_len), jnp.int32)}
  return train_step, state, batch


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seq_len", type=int, default=1024)
  parser.add_argument("--batch_size", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--attention_impl", default="xla")
  args = parser.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; quickstart model, "
        f"batch {args.batch_size} x seq_len {args.seq_len}, {args.rounds} interleaved rounds",
        flush=True)

  runs = {}
  for name in VARIANTS:  # compile and warm up
    step, state, batch = build(name, args)
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    runs[name] = [step, state, batch]
    print(f"  compiled {name} in {time.perf_counter() - t:.1f}s", flush=True)

  times = {name: [] for name in VARIANTS}
  for r in range(args.rounds):
    for name, run in runs.items():
      step, state, batch = run
      t = time.perf_counter()
      state, m = step(state, batch)
      jax.block_until_ready(m)
      times[name].append(time.perf_counter() - t)
      run[1] = state
    print(f"  round {r + 1}/{args.rounds}: "
          + " ".join(f"{n}={times[n][-1] * 1e3:.0f}ms" for n in VARIANTS), flush=True)

  median = {n: statistics.median(ts) for n, ts in times.items()}
  print(f"\n{'variant':<14}{'K':>3}{'step ms':>10}{'x vanilla':>11}{'x peer':>9}")
  for n, (_, k, _, _) in VARIANTS.items():
    print(f"{n:<14}{k:>3}{median[n] * 1e3:>10.1f}{median[n] / median['vanilla']:>11.2f}"
          f"{median[n] / median['peer']:>9.2f}")
  print(" ".join(f"{n}={median[n] / median['peer']:.3f}" for n in VARIANTS if n != "peer"))

if __name__ == "__main__":
  main()
