"""One command that measures the accelerator present: how fast this codebase is on it, against
the chip's peak and against the platform's best attention.

  python -m experiments.bench_device [--out=docs/results]       (make bench-device)
  python -m experiments.bench_device --quick --out=/tmp/bench   (reduced sizes: a CPU, minutes)

On jax.devices()[0] (one chip), with the sizes of SIZES["full"]:
1. train: the step time of configs/model_151m.py, vanilla and its default phd_cswa (K=2, W=16,
   C=32), at batch 8 x 4096, as configured (attention_impl "xla", remat, scanned layers); its
   tokens/s, TFLOP/s and MFU against the chip's dense bf16 peak (phd_jax/model/flops.py's table).
   A kind not in the table (a CPU included) has no MFU, and the output says so. Each step is
   timed on its own (experiments/train_timing.py): the median of 10 after the compile and 2
   warm-up steps.
2. attention at L=4096, batch 4, the 151m model's heads (12 query, 4 kv, head_dim 64), bf16: ours
   (the xla path, the Pallas kernel) against the platform's best attention given the same mask
   (experiments/attention_paths.py: cuDNN, splash or XLA), for vanilla and PHD-CSWA K=2, 3
   (W=16, C=32), forward and forward+backward; the median of 10 calls after the compile. The
   forward rows also give each path's largest difference from our xla path (all compute one
   function; bf16 rounding only).
3. decode: tokens/s of the 151m model at batch 1 and 32, vanilla and phd_cswa K=2, 2048 positions
   cached, 32 steps x 3 rounds, the median (experiments/inference_timing.py).
Output: OUT/bench_device_<kind>.json and .md beside it (the markdown is also printed). A path
that cannot run here is n/a with the reason; one that fails (out of memory, a kernel refused) is
recorded with its error, the rest still runs, and the command then exits 1. The full sizes are
meant to finish within 8 minutes on one H100-class GPU, most of it compiling.
"""
from __future__ import annotations

import functools
import gc
import json
import re
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags

from configs import model_151m, sizes
from experiments import cli
from experiments.attention_paths import Path, forward_backward, ours, peer, peer_name, platform
from experiments.inference_timing import bench_decode, timed
from experiments.report import command, machine
from experiments.train_timing import build_step, run_step
from phd_jax import files
from phd_jax.cli import common
from phd_jax.model import flops
from phd_jax.spec import PHDSpec

_QUICK = flags.DEFINE_bool("quick", False, "Reduced sizes (SIZES['quick']) that a CPU runs.")
_OUT = flags.DEFINE_string("out", "docs/results", "Folder of the JSON and the markdown.")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 0, "Train batch size (0: the size's own; "
                                    "lower it where the chip's memory is short).")

SIZES = {
    "full": dict(model="151m", train_batch=8, train_len=4096, warmup=2, steps=10, attn_batch=4,
                 attn_len=4096, attn_iters=10, cached=2048, decode_steps=32, rounds=3,
                 decode_batches=(1, 32)),
    "quick": dict(model="tiny", train_batch=2, train_len=128, warmup=1, steps=3, attn_batch=1,
                  attn_len=256, attn_iters=3, cached=64, decode_steps=4, rounds=2,
                  decode_batches=(1, 32)),
}
TRAIN_VARIANTS = ("vanilla", "phd_cswa")
ATTENTION = {"vanilla": PHDSpec("vanilla", 1),
             "phd_cswa_k2": PHDSpec("phd_cswa", 2, window=16, chunk=32),
             "phd_cswa_k3": PHDSpec("phd_cswa", 3, window=16, chunk=32)}
PATHS = ("ours_xla", "ours_pallas", "peer")


def model_config(size: str, variant: str) -> ml_collections.ConfigDict:
  """configs/model_151m.py for "151m"; configs/sizes.py's other sizes for --quick."""
  return model_151m.get_config(variant) if size == "151m" else sizes.sized_config(size, variant)


def failure(e: Exception) -> str:
  return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def device_info(dev: jax.Device) -> dict:
  peak = flops.peak_flops(dev.device_kind)
  known = ", ".join(k for k, _ in flops.PEAK_BF16_FLOPS)
  return dict(backend=jax.default_backend(), platform=platform(dev), kind=dev.device_kind,
              count=jax.device_count(), jax=jax.__version__, machine=machine(),
              peak_bf16_tflops=peak / 1e12 if peak else None,
              mfu_note="" if peak else f"MFU left out: device kind {dev.device_kind!r} has no "
              f"bf16 peak in phd_jax/model/flops.py (known: {known})")


def bench_train(s: dict, dev: jax.Device) -> list[dict]:
  rows = []
  for variant in TRAIN_VARIANTS:
    cfg = model_config(s["model"], variant)
    cfg.train.update(batch_size=s["train_batch"], seq_len=s["train_len"])
    row = dict(variant=variant, K=cfg.model.phd.num_copies, batch=s["train_batch"],
               seq_len=s["train_len"], attention_impl=cfg.model.attention_impl)
    try:
      run = build_step(cfg)
      row["compile_s"] = run_step(run)
      for _ in range(s["warmup"]):
        run_step(run)
      step_s = statistics.median(run_step(run) for _ in range(s["steps"]))
    except Exception as e:  # out of memory, a compile refused: recorded, the rest still runs
      rows.append({**row, "error": failure(e)})
      continue
    finally:
      run = None
      gc.collect()
    rate = flops.Throughput(cfg, [dev])(1.0 / step_s)
    rows.append({**row, "step_ms": step_s * 1e3,
                 "tokens_per_s": s["train_batch"] * s["train_len"] / step_s,
                 "tflops_per_s": rate["tflops_per_s"], "mfu": rate.get("mfu")})
    print(f"  train {variant}: {step_s * 1e3:.1f} ms/step", flush=True)
  return rows


def measure(build, wrap, args: tuple, iters: int) -> tuple[dict, jax.Array | None]:
  """One path, one pass: ({"ms", "compile_s"} | {"na"} | {"error"}, its output)."""
  try:
    path: Path = build()
    if path.fn is None:
      return {"na": path.na}, None
    fn = jax.jit(wrap(path.fn))
    compile_s = timed(fn, *args, *path.aux)
    ms = statistics.median(timed(fn, *args, *path.aux) for _ in range(iters)) * 1e3
    return {"ms": ms, "compile_s": compile_s}, fn(*args, *path.aux)
  except Exception as e:  # a kernel refused (shape, version), out of memory: recorded
    return {"error": failure(e)}, None


def bench_attention(s: dict, m: ml_collections.ConfigDict, plat: str) -> list[dict]:
  b, seq_len, h, hkv, d = s["attn_batch"], s["attn_len"], m.num_heads, m.num_kv_heads, m.head_dim
  rows = []
  for name, spec in ATTENTION.items():
    t = spec.num_tokens(seq_len)
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (b, t, n, d), jnp.bfloat16)  # [B, K*L, H, D]
               for key, n in zip(keys, (h, hkv, hkv)))
    builds = {"ours_xla": lambda: ours("xla", spec, plat, xla_block=m.xla_block),
              "ours_pallas": lambda: ours("pallas", spec, plat,
                                          (m.pallas_block_q, m.pallas_block_kv)),
              "peer": lambda: peer(spec, seq_len, h, plat)}
    builds = {p: functools.cache(fn) for p, fn in builds.items()}  # masks made once, both passes
    for pass_, wrap in (("forward", lambda f: f), ("forward+backward", forward_backward)):
      row, outs = {"variant": name, "K": spec.num_copies, "pass": pass_}, {}
      for p in PATHS:
        row[p], outs[p] = measure(builds[p], wrap, (q, k, v), s["attn_iters"])
      if pass_ == "forward" and outs["ours_xla"] is not None:
        for p in ("ours_pallas", "peer"):
          if outs[p] is not None:
            diff = jnp.abs(outs[p].astype(jnp.float32) - outs["ours_xla"].astype(jnp.float32))
            row[p]["max_abs_diff_vs_ours_xla"] = float(diff.max())
      rows.append(row)
      print(f"  attention {name} {pass_}: " + " ".join(
          f"{p}={row[p]['ms']:.2f}ms" if "ms" in row[p] else f"{p}=n/a" for p in PATHS),
          flush=True)
  return rows


def bench_decoding(s: dict) -> list[dict]:
  base = model_config(s["model"], "vanilla").model
  rows = []
  for batch in s["decode_batches"]:
    try:
      step_s = bench_decode([2], s["cached"], s["decode_steps"], s["rounds"], batch, base)
    except Exception as e:  # out of memory: recorded
      rows.append(dict(batch=batch, variant="vanilla and phd_cswa", error=failure(e)))
      continue
    for k, sec in step_s.items():
      rows.append(dict(batch=batch, variant="vanilla" if k == 1 else "phd_cswa", K=k,
                       cached=s["cached"], step_ms=sec * 1e3, tokens_per_s=batch / sec))
    print(f"  decode batch {batch}: " + " ".join(f"K={k} {batch / sec:.0f} tokens/s"
                                                 for k, sec in step_s.items()), flush=True)
  return rows


def errors(result: dict) -> list[str]:
  """Every failed measurement, named."""
  out = [f"train {r['variant']}: {r['error']}" for r in result["train"] if "error" in r]
  out += [f"attention {r['variant']} {r['pass']} {p}: {r[p]['error']}"
          for r in result["attention"]["rows"] for p in PATHS if "error" in r[p]]
  out += [f"decode batch {r['batch']}: {r['error']}" for r in result["decode"] if "error" in r]
  return out


def num(x, fmt: str) -> str:
  return "-" if x is None else format(x, fmt)


def cell(r: dict, ref: dict | None = None) -> str:
  if "ms" not in r:
    return "n/a" if "na" in r else f"error ({r['error']})"
  ratio = f" ({r['ms'] / ref['ms']:.2f}x peer)" if ref and "ms" in ref and r is not ref else ""
  diff = r.get("max_abs_diff_vs_ours_xla")
  return f"{r['ms']:.2f}{ratio}" + (f", diff {diff:.1e}" if diff is not None else "")


def markdown(result: dict) -> str:
  d, s, a = result["device"], result["sizes"], result["attention"]
  lines = [f"# bench_device: {d['kind']} ({d['platform']})", "",
           f"- command: `{result['command']}`", f"- machine: {d['machine']}",
           f"- sizes: {json.dumps(s)}", "- peak bf16: "
           + (f"{d['peak_bf16_tflops']:.0f} TFLOP/s" if d["peak_bf16_tflops"] else d["mfu_note"]),
           f"- wall time: {result['seconds']:.0f} s", "", "## Train step (one chip)", "",
           "| variant | K | batch x len | attention | ms/step | tokens/s | TFLOP/s | MFU |",
           "|---|---|---|---|---|---|---|---|"]
  for r in result["train"]:
    if "error" in r:
      lines.append(f"| {r['variant']} | {r['K']} | {r['batch']} x {r['seq_len']} | "
                   f"{r['attention_impl']} | error: {r['error']} | | | |")
      continue
    lines.append(f"| {r['variant']} | {r['K']} | {r['batch']} x {r['seq_len']} | "
                 f"{r['attention_impl']} | {r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | "
                 f"{r['tflops_per_s']:.3g} | {num(r['mfu'], '.1%')} |")
  lines += ["", f"## Attention, L={a['length']}, batch {a['batch']}, {a['heads']} (ms; x peer)",
            "", f"peer: {a['peer']}", "", "| variant | K | pass | ours xla | ours pallas | peer |",
            "|---|---|---|---|---|---|"]
  for r in a["rows"]:
    lines.append(f"| {r['variant']} | {r['K']} | {r['pass']} | "
                 + " | ".join(cell(r[p], r["peer"]) for p in PATHS) + " |")
  na = {f"{p}: {r[p]['na']}" for r in a["rows"] for p in PATHS if "na" in r[p]}
  lines += [""] * bool(na) + [f"n/a, {reason}" for reason in sorted(na)]
  lines += ["", "## Decode", "", "| batch | variant | K | cached | ms/step | tokens/s |",
            "|---|---|---|---|---|---|"]
  for r in result["decode"]:
    lines.append(f"| {r['batch']} | {r['variant']} | error: {r['error']} | | | |" if "error" in r
                 else f"| {r['batch']} | {r['variant']} | {r['K']} | {r['cached']} | "
                 f"{r['step_ms']:.2f} | {r['tokens_per_s']:,.0f} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  s = dict(SIZES["quick" if _QUICK.value else "full"])
  if _TRAIN_BATCH.value:
    s["train_batch"] = cli.at_least(_TRAIN_BATCH, 1)
  dev, start = jax.devices()[0], time.perf_counter()
  info, m = device_info(dev), model_config(s["model"], "vanilla").model
  print(f"bench_device on {info['kind']} ({info['platform']}), jax {jax.__version__}; "
        f"{'quick' if _QUICK.value else 'full'} sizes", flush=True)
  result = dict(command=command(), device=info, quick=_QUICK.value, sizes=s,
                train=bench_train(s, dev))
  result["attention"] = dict(peer=peer_name(info["platform"]), length=s["attn_len"],
                             batch=s["attn_batch"], heads=f"{m.num_heads} query / "
                             f"{m.num_kv_heads} kv heads of {m.head_dim}",
                             rows=bench_attention(s, m, info["platform"]))
  result["decode"] = bench_decoding(s)
  result["seconds"] = time.perf_counter() - start
  result["errors"] = errors(result)
  slug = re.sub(r"[^a-z0-9]+", "_", info["kind"].lower()).strip("_")
  stem = files.join(_OUT.value, f"bench_device_{slug}{'_quick' if _QUICK.value else ''}")
  files.makedirs(_OUT.value)
  files.write_text(stem + ".json", json.dumps(result, indent=1) + "\n")
  files.write_text(stem + ".md", md := markdown(result))
  print("\n" + md + f"\nwritten: {stem}.json, {stem}.md")
  if result["errors"]:
    raise ValueError(f"{len(result['errors'])} measurement(s) failed (in {stem}.json): "
                     + "; ".join(result["errors"]))


if __name__ == "__main__":
  common.launch(main)
