"""Loader throughput from token shards for one host, against what the 1.2B train step consumes.

Reads windows of the 1.2B config's shape (batch_size x seq_len, default the whole global batch
on one host: the worst case) through the training loader (grain over memory-mapped shards:
shuffle, host slice, batch), and compares its tokens/s with the tokens/s a host's train steps
consume: chips x peak FLOP/s x MFU / (6 x params x K) (the PHD model computes every token K
times). The last line holds `ratio=`: loader tokens/s over consumed tokens/s; it must stay > 1.

  python experiments/bench_data.py [--token_dir=DIR] [--batches 20] [--chips 8 --peak_tflops 989]

Without --token_dir it writes synthetic uint32 shards (random ids of the 100k vocabulary) to a
temporary directory. The first pass reads from disk, later ones from the page cache; both shown.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np

from configs import model_1_2b
from phd_jax import data, token_data
from phd_jax.checkpoint import param_shapes


def synthetic_shards(directory: str, shards: int, tokens: int, vocab: int) -> list:
  rng = np.random.default_rng(0)
  out = []
  for i in range(shards):
    path = os.path.join(directory, f"{i:05d}.bin")
    rng.integers(0, vocab, tokens, dtype=np.uint32).astype("<u4").tofile(path)
    out.append(token_data._raw_shard(path, "uint32", "dtype"))
  return out


def loader_tokens_per_s(windows, seq_len: int, batch_size: int, batches: int) -> float:
  it = iter(data.train_dataset(windows, seq_len, batch_size, seed=0))
  next(it)  # the first batch builds the pipeline
  t = time.perf_counter()
  for _ in range(batches):
    b = next(it)
  assert b["inputs"].shape == (batch_size, seq_len)
  return batches * batch_size * seq_len / (time.perf_counter() - t)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--token_dir", default="", help="a phd_jax.prepare output (else synthetic)")
  parser.add_argument("--variant", default="phd_cswa")
  parser.add_argument("--batch_size", type=int, default=0, help="default: the config's")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--shards", type=int, default=4)
  parser.add_argument("--shard_tokens", type=int, default=1 << 24)
  parser.add_argument("--chips", type=int, default=8, help="accelerators per host")
  parser.add_argument("--peak_tflops", type=float, default=989.0, help="bf16 dense, per chip "
                      "(H100 SXM: 989; TPU v5p: 459)")
  parser.add_argument("--mfu", type=float, default=0.5)
  args = parser.parse_args()

  cfg = model_1_2b.get_config(args.variant)
  seq_len, batch = cfg.train.seq_len, args.batch_size or cfg.train.batch_size
  params = sum(math.prod(s) for s in param_shapes(cfg.model).values())
  k = cfg.model.phd.num_copies
  consumed = args.chips * args.peak_tflops * 1e12 * args.mfu / (6 * params * k)
  print(f"1.2b {args.variant}: {params / 1e9:.2f}B params, K={k}; batch {batch} x seq_len "
        f"{seq_len} on one host; train steps consume {consumed / 1e3:.1f}k tok/s "
        f"({args.chips} chips x {args.peak_tflops:g} TFLOP/s x MFU {args.mfu})", flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    if args.token_dir:
      shards = token_data.load(
          _data_cfg(args.token_dir), _tokenizer_of(args.token_dir), cfg.model.vocab_size).train
      where = args.token_dir
    else:
      shards = synthetic_shards(tmp, args.shards, args.shard_tokens, cfg.model.vocab_size)
      where = f"synthetic: {args.shards} x {args.shard_tokens / 1e6:.1f}M uint32 tokens"
    windows = token_data.TokenWindows(shards, seq_len)
    print(f"shards: {where}; {len(windows)} windows", flush=True)
    rates = [loader_tokens_per_s(windows, seq_len, batch, args.batches) for _ in range(2)]
  for name, r in zip(("first pass", "cached"), rates):
    print(f"loader ({name}): {r / 1e6:.1f}M tok/s = {r / consumed:.1f}x the train step")
  print(f"loader_tok_s={min(rates):.0f} consumed_tok_s={consumed:.0f} "
        f"ratio={min(rates) / consumed:.2f}")


def _data_cfg(token_dir: str):
  from configs import base
  d = base.get_config().data
  d.update(source="tokens", token_dir=token_dir)
  return d


def _tokenizer_of(token_dir: str):
  import json
  from phd_jax import tokenizers
  with open(os.path.join(token_dir, "metadata.json")) as f:
    t = json.load(f)["tokenizer"]
  return tokenizers.load(os.path.join(token_dir, t["file"]) if t["file"] else t["spec"])


if __name__ == "__main__":
  main()
