"""Inference cost against vanilla: prefill vs prompt length, decode step vs K, the KV cache.

The paper (Fig. 9, 550M on an A100): PHD-CSWA prefill about 1.08x vanilla while PHD-SWA's grows
with K (up to ~73x); decoding with K up to 256 costs at most ~20% more; the KV cache equals
vanilla's. Timings come from experiments/inference_timing.py's round-robin harness (every
variant timed in turn after a warm-up, medians), on the quickstart model at batch 1.

  python -m experiments.latency --quick --out=/tmp/latency
  python -m experiments.latency --out=results/latency
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
from absl import flags

from experiments import cli
from experiments.inference_timing import CACHE, PREFILL, bench_decode, bench_prefill, model_cfg
from experiments.report import command, machine, write_csv
from phd_jax import files
from phd_jax.cli import common
from phd_jax.model.kv_cache import cache_bytes

_QUICK = flags.DEFINE_bool("quick", False, "Three prompt lengths, K up to 8.")
_OUT = flags.DEFINE_string("out", "runs/experiments", "Output folder (CSV, PNG, table).")

SETTINGS = {
    "quick": dict(prompt_lens=(128, 512, 2048), ks=(2, 4, 8), cached=512, steps=10, rounds=3,
                  prefill_ks=(2, 4), prefill_len=512),
    "full": dict(prompt_lens=(256, 512, 1024, 2048, 4096, 8192), ks=(2, 4, 8, 16, 32),
                 cached=2048, steps=30, rounds=5, prefill_ks=(2, 4, 8, 16), prefill_len=1024),
}
GROWTH = {  # prefill against K: the paper's PHD-SWA computes every hidden copy; ours need not
    "phd_cswa": ("phd_cswa", 16, 32, True),
    "phd_swa": ("phd_swa", 16, 0, True),
    "phd_swa_full": ("phd_swa", 16, 0, False),
}


def prefill_vs_k(s) -> dict:
  """{(name, K): prefill time / vanilla's} at one prompt length."""
  variants = {"vanilla": ("vanilla", 1, 0, 0, True)}
  variants |= {f"{n}@{k}": (v, k, w, c, tr) for n, (v, w, c, tr) in GROWTH.items()
               for k in s["prefill_ks"]}
  t = bench_prefill([s["prefill_len"]], s["rounds"], variants)
  ref = t[s["prefill_len"], "vanilla"]
  return {(n, k): t[s["prefill_len"], f"{n}@{k}"] / ref for n in GROWTH for k in s["prefill_ks"]}


def _style(ax, xlabel: str, ylabel: str, title: str, logy: bool = False) -> None:
  ax.set_xscale("log", base=2)
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  if logy:
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)


def plot(pre, growth, dec, s, path: str) -> None:
  fig, (a, g, b) = plt.subplots(1, 3, figsize=(15.5, 4))
  lens = s["prompt_lens"]
  for name in PREFILL:
    a.plot(lens, [pre[p, name] / pre[p, "vanilla"] for p in lens], marker="o", label=name)
  _style(a, "prompt length (positions)", "prefill time / vanilla", "prefill, K=2 (W=16, C=32)")
  for name in GROWTH:
    g.plot(s["prefill_ks"], [growth[name, k] for k in s["prefill_ks"]], marker="o", label=name)
  _style(g, "K (copies)", "prefill time / vanilla",
         f"prefill against K, {s['prefill_len']}-token prompt", logy=True)
  ks = [1] + list(s["ks"])
  b.plot(ks, [dec[k] / dec[1] for k in ks], marker="o", color="tab:red", label="phd_cswa")
  b.axhline(1.2, ls="--", color="gray", lw=1, label="paper: at most ~1.2x (K<=256)")
  _style(b, "K (copies)", "decode step time / vanilla",
         f"decode step, {s['cached']} cached positions")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  s, out = SETTINGS["quick" if _QUICK.value else "full"], _OUT.value
  os.makedirs(out, exist_ok=True)
  where = machine()
  print(f"{where}; settings {s}", flush=True)

  vanilla = cache_bytes(model_cfg(*CACHE["vanilla"]), 1, s["cached"])
  cache_rows = [dict(variant=n, K=spec[1], bytes=cache_bytes(model_cfg(*spec), 1, s["cached"]))
                for n, spec in CACHE.items()]
  pre = bench_prefill(list(s["prompt_lens"]), s["rounds"])
  growth = prefill_vs_k(s)
  dec = bench_decode(list(s["ks"]), s["cached"], s["steps"], s["rounds"])

  write_csv(os.path.join(out, "latency_prefill.csv"),
            [dict(variant=n, prompt_len=pl, seconds=pre[pl, n],
                  x_vanilla=pre[pl, n] / pre[pl, "vanilla"])
             for pl in s["prompt_lens"] for n in PREFILL])
  write_csv(os.path.join(out, "latency_prefill_vs_k.csv"),
            [dict(variant=n, K=k, prompt_len=s["prefill_len"], x_vanilla=x)
             for (n, k), x in growth.items()])
  write_csv(os.path.join(out, "latency_decode.csv"),
            [dict(K=k, seconds=t, x_vanilla=t / dec[1]) for k, t in dec.items()])
  write_csv(os.path.join(out, "latency_kv_cache.csv"),
            [dict(r, x_vanilla=r["bytes"] / vanilla) for r in cache_rows])
  plot(pre, growth, dec, s, os.path.join(out, "latency.png"))

  lens = s["prompt_lens"]
  md = [f"# Inference cost against vanilla\n\n- command: `{command()}`\n- machine: {where}\n"
        f"- model: the quickstart shape (4 layers, d=192), batch 1, float32; medians of "
        f"{s['rounds']} interleaved rounds\n",
        "## Prefill time, x vanilla (K=2, W=16, C=32)\n",
        "| variant | " + " | ".join(str(x) for x in lens) + " |",
        "|---|" + "---|" * len(lens)]
  md += [f"| {n} | " + " | ".join(f"{pre[x, n] / pre[x, 'vanilla']:.3f}" for x in lens) + " |"
         for n in PREFILL]
  md += ["| vanilla ms | " + " | ".join(f"{pre[x, 'vanilla'] * 1e3:.1f}" for x in lens) + " |",
         f"\n## Prefill time against K, x vanilla ({s['prefill_len']}-token prompt)\n",
         "| variant | " + " | ".join(f"K={k}" for k in s["prefill_ks"]) + " |",
         "|---|" + "---|" * len(s["prefill_ks"])]
  md += [f"| {n} | " + " | ".join(f"{growth[n, k]:.3f}" for k in s["prefill_ks"]) + " |"
         for n in GROWTH]
  md += [f"\n## Decode step, phd_cswa (W=16, C=32), {s['cached']} cached positions\n",
         "| K | ms | x vanilla |", "|---|---|---|"]
  md += [f"| {k} | {t * 1e3:.2f} | {t / dec[1]:.3f} |" for k, t in dec.items()]
  md += [f"\n## KV cache, batch 1, {s['cached']} positions\n",
         "| variant | K | bytes | x vanilla |",
         "|---|---|---|---|"]
  md += [f"| {r['variant']} | {r['K']} | {r['bytes']:,d} | {r['bytes'] / vanilla:.3f} |"
         for r in cache_rows]
  text = "\n".join(md) + "\n"
  files.write_text(os.path.join(out, "latency.md"), text)
  print("\n" + text, flush=True)


if __name__ == "__main__":
  common.launch(main)
