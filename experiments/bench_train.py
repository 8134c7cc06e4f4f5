"""Train-step time of the PHD variants relative to vanilla: same model, same batch, one run.

Steps of all variants are timed interleaved (round-robin) after a warm-up, so machine noise hits
every variant alike; the median per variant is reported. Ratios are given against our vanilla
and against a peer: the same vanilla model whose attention is `jax.nn.dot_product_attention`
(causal; attention_impl="jax"). The last line holds the ratios to the peer as name=value pairs.

  python -m experiments.bench_train [--seq_len=1024 --batch_size=2 --rounds=7]
"""
from __future__ import annotations

import statistics

import jax
from absl import flags

from configs import quickstart
from experiments import cli
from experiments.train_timing import build_step, run_step
from phd_jax.cli import common

_SEQ_LEN = flags.DEFINE_integer("seq_len", 1024, "Positions per sequence.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 2, "Sequences per step.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved rounds (the median is reported).")
_ATTENTION_IMPL = flags.DEFINE_string(
    "attention_impl", "xla", "config.model.attention_impl of every variant but the peer.")

VARIANTS = {  # name: (variant, K, W, C)
    "peer": ("vanilla", 1, 0, 0),  # attention by jax.nn.dot_product_attention
    "vanilla": ("vanilla", 1, 0, 0),
    "phd_k2": ("phd", 2, 0, 0),
    "phd_k3": ("phd", 3, 0, 0),
    "phd_cswa_k2": ("phd_cswa", 2, 16, 32),
    "repeat_k2": ("repeat", 2, 0, 0),
}


def build(name: str, batch_size: int, seq_len: int, attention_impl: str) -> list:
  cfg = quickstart.get_config()
  variant, k, w, c = VARIANTS[name]
  cfg.model.phd.update(variant=variant, num_copies=k, window=w, chunk=c)
  cfg.model.attention_impl = "jax" if name == "peer" else attention_impl
  cfg.train.update(batch_size=batch_size, seq_len=seq_len)
  return build_step(cfg)


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  batch_size, seq_len = cli.at_least(_BATCH_SIZE, 1), cli.at_least(_SEQ_LEN, 1)
  rounds = cli.at_least(_ROUNDS, 1)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; quickstart model, "
        f"batch {batch_size} x seq_len {seq_len}, {rounds} interleaved rounds", flush=True)

  runs = {}
  for name in VARIANTS:  # compile and warm up
    runs[name] = build(name, batch_size, seq_len, _ATTENTION_IMPL.value)
    print(f"  compiled {name} in {run_step(runs[name]):.1f}s", flush=True)

  times = {name: [] for name in VARIANTS}
  for r in range(rounds):
    for name, run in runs.items():
      times[name].append(run_step(run))
    print(f"  round {r + 1}/{rounds}: "
          + " ".join(f"{n}={times[n][-1] * 1e3:.0f}ms" for n in VARIANTS), flush=True)

  median = {n: statistics.median(ts) for n, ts in times.items()}
  print(f"\n{'variant':<14}{'K':>3}{'step ms':>10}{'x vanilla':>11}{'x peer':>9}")
  for n, (_, k, _, _) in VARIANTS.items():
    print(f"{n:<14}{k:>3}{median[n] * 1e3:>10.1f}{median[n] / median['vanilla']:>11.2f}"
          f"{median[n] / median['peer']:>9.2f}")
  print(" ".join(f"{n}={median[n] / median['peer']:.3f}" for n in VARIANTS if n != "peer"))


if __name__ == "__main__":
  common.launch(main)
