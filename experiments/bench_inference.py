"""Inference cost of PHD relative to vanilla: KV cache bytes, prefill time, decode-step time.

Same model (the quickstart shape) for every variant; timings are taken round-robin over the
variants after a warm-up (each prompt length on its own, the order rotated every round), and the
median is reported (experiments/inference_timing.py). The last line holds name=value pairs:
prefill_<variant>= at the longest-but-one prompt length (2048 by default) and decode_k<K>=.

  python -m experiments.bench_inference [--prompt_lens=512,2048,8192 --rounds=5]
"""
from __future__ import annotations

import jax
from absl import flags

from experiments import cli
from experiments.inference_timing import CACHE, PREFILL, bench_decode, bench_prefill, model_cfg
from phd_jax.cli import common
from phd_jax.model.kv_cache import cache_bytes

_PROMPT_LENS = flags.DEFINE_list("prompt_lens", "512,2048,8192", "Prompt lengths of the prefill.")
_DECODE_KS = flags.DEFINE_list("decode_ks", "2,4,8,16", "K of the phd_cswa decode steps.")
_CACHED = flags.DEFINE_integer("cached", 2048, "Cached positions before the decode steps.")
_DECODE_STEPS = flags.DEFINE_integer("decode_steps", 30, "Decode steps timed per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds (the median is reported).")


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  prompt_lens, ks = cli.positive_ints(_PROMPT_LENS), cli.positive_ints(_DECODE_KS)
  cached, rounds = cli.at_least(_CACHED, 1), cli.at_least(_ROUNDS, 1)
  steps = cli.at_least(_DECODE_STEPS, 1)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; quickstart model, batch 1, "
        f"{rounds} interleaved rounds (median)", flush=True)

  print(f"\nKV cache bytes, batch 1, {cached} positions")
  vanilla = cache_bytes(model_cfg(*CACHE["vanilla"]), 1, cached)
  for name, spec in CACHE.items():
    b = cache_bytes(model_cfg(*spec), 1, cached)
    print(f"  {name:<12}{b:>12,d}  {b / vanilla:6.3f}x vanilla")

  pre = bench_prefill(prompt_lens, rounds)
  print(f"\nprefill time, x vanilla (K=2, W=16, C=32)\n  {'variant':<14}"
        + "".join(f"{p:>10}" for p in prompt_lens))
  for name in PREFILL:
    print(f"  {name:<14}" + "".join(f"{pre[p, name] / pre[p, 'vanilla']:>10.3f}"
                                     for p in prompt_lens))
  print("  vanilla ms    " + "".join(f"{pre[p, 'vanilla'] * 1e3:>10.1f}" for p in prompt_lens))

  dec = bench_decode(ks, cached, steps, rounds)
  print(f"\ndecode step, phd_cswa vs vanilla, batch 1, {cached} cached positions")
  for k, t in dec.items():
    print(f"  K={k:<3} {t * 1e3:8.2f} ms  {t / dec[1]:6.3f}x vanilla")

  ref = prompt_lens[1] if len(prompt_lens) > 1 else prompt_lens[0]
  pairs = [f"prefill_{n}={pre[ref, n] / pre[ref, 'vanilla']:.3f}"
           for n in PREFILL if n != "vanilla"]
  pairs += [f"decode_k{k}={dec[k] / dec[1]:.3f}" for k in ks]
  print(" ".join(pairs))


if __name__ == "__main__":
  common.launch(main)
