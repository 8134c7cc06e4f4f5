"""Tiles the PHD kernel runs, against vanilla causal, naive repetition and splash attention.

For each sequence length and K: the (q block, kv block) tiles our block tables visit, the tiles of
vanilla causal attention and of naive repetition (`repeat`: causal over K*L tokens), and the
non-empty tiles that the library's splash attention finds for the same mask (its block metadata,
from a computable mask built on the same rules). Then, at one small size, our kernel's output
against splash's, both in interpret mode, and a picture of the tiles. The last line holds
name=value ratios to vanilla at the longest length.

  python -m experiments.bench_kernel [--lens=2048,8192 --block=128]
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask_info as info

from experiments import cli
from experiments.attention_paths import PHDSplashMask, splash_attention, splash_kernel
from pallas_kernels import block_tables, phd_flash_attention, visited_blocks
from phd_jax.cli import common
from phd_jax.model.attention import attention
from phd_jax.spec import PHDSpec

_LENS = flags.DEFINE_list("lens", "2048,8192", "Sequence lengths (original tokens).")
_KS = flags.DEFINE_list("ks", "1,2,3,4", "Numbers of copies K.")
_BLOCK = flags.DEFINE_integer("block", 128, "Tile size: q and kv blocks of BLOCK positions.")
_NO_SPLASH = flags.DEFINE_bool("no_splash", False, "Skip splash's metadata (slow).")


def splash_tiles(spec: PHDSpec, seq_len: int, block: int) -> int:
  mask = splash_mask.MultiHeadMask((PHDSplashMask(spec, seq_len),))
  mask_info, _ = info.process_mask(mask, (block, block), shrink_grid=False)
  return int((np.asarray(mask_info.block_mask) > 0).sum())


def tile_picture(spec: PHDSpec, seq_len: int, block: int) -> str:
  """'#' full tile (no mask), '+' partial (masked in-kernel), '.' never visited."""
  t = block_tables(spec, seq_len, block_q=block, block_kv=block)
  n_kv = -(-spec.num_tokens(seq_len) // block)
  rows = []
  for i in range(t.kv_index.shape[0]):
    row = ["."] * n_kv
    for s in range(t.num_visits[i]):
      row[t.kv_index[i, s]] = "#" if t.full[i, s] else "+"
    rows.append("".join(row))
  return "\n".join(rows)


def compare_outputs(block: int) -> float:
  """Our kernel against splash (both interpreted) on phd_cswa, K=2: max |difference|."""
  spec, seq_len, heads, d = PHDSpec("phd_cswa", 2, window=16, chunk=32), 128, 2, 64
  total = spec.num_tokens(seq_len)
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(1, total, heads, d)), jnp.float32) for _ in range(3))
  ours = phd_flash_attention(q, k, v, spec, block_q=block, block_kv=block, interpret=True)
  theirs = splash_attention(q, k, v, splash_kernel(spec, seq_len, heads, block, interpret=True))
  dense = attention(q, k, v, spec, "dense")
  print(f"  ours vs dense {float(jnp.abs(ours - dense).max()):.2e}, splash vs dense "
        f"{float(jnp.abs(theirs - dense).max()):.2e}")
  return float(jnp.abs(ours - theirs).max())


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  blk = cli.at_least(_BLOCK, 1)
  lens, ks = cli.positive_ints(_LENS), cli.positive_ints(_KS)
  print(f"tiles of {blk}x{blk}; x vanilla causal in brackets; phd_cswa: W=16, C=32")
  print(f"{'L':>6}{'K':>3}{'vanilla':>9}{'phd':>16}{'phd_cswa':>16}{'repeat':>16}"
        f"{'splash(phd_cswa)':>18}")
  last = {}
  for seq_len in lens:
    vanilla = visited_blocks(PHDSpec("vanilla", 1), seq_len, block_q=blk, block_kv=blk)
    for k in ks:
      variants = {"phd": PHDSpec("phd" if k > 1 else "vanilla", k),
                  "phd_cswa": PHDSpec("phd_cswa", k, window=16, chunk=32) if k > 1
                  else PHDSpec("vanilla", 1),
                  "repeat": PHDSpec("repeat", k)}
      counts = {n: visited_blocks(s, seq_len, block_q=blk, block_kv=blk)
                for n, s in variants.items()}
      cells = "".join(f"{c:>9} [{c / vanilla:4.2f}]" for c in counts.values())
      sp = ""
      if not _NO_SPLASH.value:
        n_splash = splash_tiles(variants["phd_cswa"], seq_len, blk)
        sp = f"{n_splash:>11} [{n_splash / vanilla:4.2f}]"
      print(f"{seq_len:>6}{k:>3}{vanilla:>9}{cells}{sp}", flush=True)
      last.update({f"{n}_k{k}": c / vanilla for n, c in counts.items()})
  print("\ntiles of phd_cswa (K=2, W=16, C=32), L=64, 16x16 blocks "
        "('#' full, '+' partial, '.' skipped):")
  print(tile_picture(PHDSpec("phd_cswa", 2, window=16, chunk=32), 64, 16))
  print(f"\nour kernel vs splash on the same mask (interpret mode): max |diff| "
        f"{compare_outputs(blk):.2e}")
  print(" ".join(f"{n}={r:.3f}" for n, r in last.items()))


if __name__ == "__main__":
  common.launch(main)
