"""Loader throughput from token shards for one host, against what the 1.2B train step consumes.

Reads windows of the 1.2B config's shape (batch_size x seq_len, default the whole global batch
on one host: the worst case) through the training loader (grain over memory-mapped shards:
shuffle, host slice, batch), and compares its tokens/s with the tokens/s a host's train steps
consume: chips x peak FLOP/s x MFU / (6 x params x K) (the PHD model computes every token K
times). The last line holds `ratio=`: loader tokens/s over consumed tokens/s; it must stay > 1.

  python -m experiments.bench_data [--token_dir=DIR] [--batches=20] [--chips=8 --peak_tflops=989]
  python -m experiments.bench_data --bucket=gs://B/bench,s3://B/bench --shard_tokens=1000000
  python -m experiments.bench_data --sources=3 [--bucket=...]  # a 3-source mixture vs one source

Without --token_dir it writes synthetic uint32 shards (random ids of the 100k vocabulary) to a
temporary directory. The first pass reads from disk, later ones from the page cache; both shown.
--bucket (URL prefixes, comma separated) copies the same shards into each bucket and measures the
same loader reading them there (one ranged read per window, phd_jax/data/tokens.py) side by side
with the local shards, in one run: a table of tokens/s and a `storage=URL ... vs_local=` line per
bucket. The object stores are the ones the standard variables select: STORAGE_EMULATOR_HOST and
AWS_ENDPOINT_URL point them at local emulators (whose rates are the emulators': the GCS one
serves one request at a time). The copies are deleted afterwards; the last line stays the local
shards' (or --token_dir's) `ratio=`.
"""
from __future__ import annotations

import json
import math
import tempfile
import time

import numpy as np
from absl import flags

from configs import base, model_1_2b
from experiments import bench_mixture, cli
from phd_jax import files as fs
from phd_jax.checkpoints.checkpoint import param_shapes
from phd_jax.cli import common
from phd_jax.data import tokenizers, windows
from phd_jax.data import tokens as token_data

_TOKEN_DIR = flags.DEFINE_string("token_dir", "", "A phd-prepare output (default: synthetic).")
_VARIANT = flags.DEFINE_string("variant", "phd_cswa", "The 1.2b config's variant.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Sequences per batch (0: the config's).")
_BATCHES = flags.DEFINE_integer("batches", 20, "Batches read per pass.")
_SHARDS = flags.DEFINE_integer("shards", 4, "Synthetic shards.")
_SHARD_TOKENS = flags.DEFINE_integer("shard_tokens", 1 << 24, "Tokens per synthetic shard.")
_CHIPS = flags.DEFINE_integer("chips", 8, "Accelerators per host.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 989.0, "bf16 dense, per chip (H100 SXM: 989; "
                                  "TPU v5p: 459).")
_MFU = flags.DEFINE_float("mfu", 0.5, "Model FLOPs utilization of the train steps.")
_SOURCES = flags.DEFINE_integer("sources", 1, "With N > 1, also the shards split into N sources "
                                "(a mixture) against one source, in windows/s.")
_BUCKET = flags.DEFINE_list("bucket", [], "gs:// / s3:// URL prefixes, comma separated: the "
                            "shards are copied there and read back beside the local ones.")


def synthetic_shards(directory: str, shards: int, tokens: int, vocab: int) -> list:
  rng = np.random.default_rng(0)
  out = []
  for i in range(shards):
    path = fs.join(directory, f"{i:05d}.bin")
    rng.integers(0, vocab, tokens, dtype=np.uint32).astype("<u4").tofile(path)
    out.append(token_data._raw_shard(path, "uint32", "dtype"))
  return out


def loader_tokens_per_s(source, seq_len: int, batch_size: int, batches: int) -> float:
  it = iter(windows.train_dataset(source, seq_len, batch_size, seed=0))
  next(it)  # the first batch builds the pipeline
  t = time.perf_counter()
  for _ in range(batches):
    b = next(it)
  assert b["inputs"].shape == (batch_size, seq_len)
  return batches * batch_size * seq_len / (time.perf_counter() - t)


def in_bucket(shards: list, url: str) -> list:
  """The shards' copies under the URL prefix `url` (same dtype, offset and length)."""
  return [s._replace(path=fs.join(url, f"{i:05d}-{fs.basename(s.path)}"))
          for i, s in enumerate(shards)]


def measure(shards: list, seq_len: int, batch: int, batches: int) -> list[float]:
  """tokens/s of two passes of the training loader over `shards`."""
  source = token_data.TokenWindows(shards, seq_len)
  return [loader_tokens_per_s(source, seq_len, batch, batches) for _ in range(2)]


def side_by_side(results: dict[str, list[float]], consumed: float) -> str:
  """The table of every storage's tokens/s, against the train step and the first (local) one."""
  base_rate = min(next(iter(results.values())))
  width = max(len("storage"), *map(len, results))
  lines = [f"{'storage':<{width}}  {'pass 1 tok/s':>12}  {'pass 2 tok/s':>12}  "
           f"{'x train step':>12}  {'x local':>8}"]
  for name, (a, b) in results.items():
    lines.append(f"{name:<{width}}  {a / 1e6:>11.2f}M  {b / 1e6:>11.2f}M  "
                 f"{min(a, b) / consumed:>11.2f}x  {min(a, b) / base_rate:>7.3f}x")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  batches, chips = cli.at_least(_BATCHES, 1), cli.at_least(_CHIPS, 1)
  peak, mfu, token_dir = _PEAK_TFLOPS.value, _MFU.value, _TOKEN_DIR.value
  cli.check(peak > 0, f"--peak_tflops={peak:g} must be > 0")
  cli.check(0 < mfu <= 1, f"--mfu={mfu:g} must be in (0, 1]")
  buckets = [u.strip().rstrip("/") for u in _BUCKET.value if u.strip()]
  for url in buckets:
    cli.check(fs.is_url(url), f"--bucket={url} must be a gs://BUCKET/... or s3://BUCKET/... URL")
    fs.check_access(url, "--bucket", write=True)
  cfg = model_1_2b.get_config(_VARIANT.value)
  seq_len, batch = cfg.train.seq_len, cli.at_least(_BATCH_SIZE, 0) or cfg.train.batch_size
  params = sum(math.prod(s) for s in param_shapes(cfg.model).values())
  k = cfg.model.phd.num_copies
  consumed = chips * peak * 1e12 * mfu / (6 * params * k)
  print(f"1.2b {_VARIANT.value}: {params / 1e9:.2f}B params, K={k}; batch {batch} x seq_len "
        f"{seq_len} on one host; train steps consume {consumed / 1e3:.1f}k tok/s "
        f"({chips} chips x {peak:g} TFLOP/s x MFU {mfu})", flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    if token_dir:
      shards = token_data.load(
          _data_cfg(token_dir), _tokenizer_of(token_dir), cfg.model.vocab_size).train
      where = token_dir
    else:
      n, size = cli.at_least(_SHARDS, 1), cli.at_least(_SHARD_TOKENS, 2)
      shards = synthetic_shards(tmp, n, size, cfg.model.vocab_size)
      where = f"synthetic: {n} x {size / 1e6:.1f}M uint32 tokens"
    print(f"shards: {where}; {len(token_data.TokenWindows(shards, seq_len))} windows", flush=True)
    rates = measure(shards, seq_len, batch, batches)
    results = {token_dir if fs.is_url(token_dir) else "local": rates}
    n_src, mixes = cli.at_least(_SOURCES, 1), {}
    if n_src > 1:
      mixes[next(iter(results))] = bench_mixture.compare(shards, n_src, seq_len, batch, batches)
    for url in buckets:
      copies = in_bucket(shards, url)
      try:
        for s, c in zip(shards, copies):
          fs.copy_file(s.path, c.path)
        results[url] = measure(copies, seq_len, batch, batches)
        if n_src > 1:
          mixes[url] = bench_mixture.compare(copies, n_src, seq_len, batch, batches)
      finally:  # only what this run wrote: the prefix may hold other objects
        for c in copies:
          if fs.exists(c.path):
            fs.remove(c.path)
  for name, r in zip(("first pass", "cached"), rates):
    print(f"loader ({name}): {r / 1e6:.1f}M tok/s = {r / consumed:.1f}x the train step")
  if buckets:
    print(side_by_side(results, consumed))
    for url in buckets:
      r = min(results[url])
      print(f"storage={url} loader_tok_s={r:.0f} ratio={r / consumed:.2f} "
            f"vs_local={r / min(rates):.4f}")
  if mixes:
    print(bench_mixture.report(mixes, n_src))
  print(f"loader_tok_s={min(rates):.0f} consumed_tok_s={consumed:.0f} "
        f"ratio={min(rates) / consumed:.2f}")


def _data_cfg(token_dir: str):
  d = base.get_config().data
  d.update(source="tokens", token_dir=token_dir)
  return d


def _tokenizer_of(token_dir: str):
  t = json.loads(fs.read_text(fs.join(token_dir, "metadata.json")))["tokenizer"]
  return tokenizers.load(fs.join(token_dir, t["file"]) if t["file"] else t["spec"])


if __name__ == "__main__":
  common.launch(main, errors=(ValueError, OSError))  # OSError: a --token_dir without its files
