"""The attention paths bench_device times: ours, and the best attention the platform offers given
the same mask (the peer). bench_kernel shares the splash-attention pieces.

Ours: phd_jax/model/attention.py's "xla" path, and the Pallas kernel (pallas_kernels/) as the
"pallas" path runs it on a TPU. The peer, per platform:
- NVIDIA GPU ("cuda"): cuDNN's fused attention, `jax.nn.dot_product_attention(...,
  implementation="cudnn")`. Vanilla: `is_causal`. PHD: the grouped-layout mask is lower
  triangular, so `is_causal` (cuDNN skips the tiles above the diagonal) plus the mask as an
  additive bias [1, 1, T, T] made once, outside the timing; cuDNN has no block-sparse mask, so it
  computes every tile below the diagonal, the masked-out ones included.
- TPU: splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`) with the mask as a
  mask object (CausalMask; PHDSplashMask, the PHD rules evaluated per block): like ours, it
  skips the tiles the mask leaves empty.
- CPU and other GPUs: XLA's `jax.nn.dot_product_attention(..., implementation="xla")`, causal or
  with the dense mask [1, 1, T, T].
A path that cannot run on a platform is a reason (shown as n/a), never an error. Every function
takes the platform as an argument, so tests lower the GPU and TPU paths on a CPU.
"""
from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

from pallas_kernels import phd_flash_attention
from phd_jax.masks import MASK_VALUE, dense_mask, visible
from phd_jax.model.attention import attention
from phd_jax.spec import PHDSpec

PEERS = {  # platform: what its peer is, as the tables state it
    "cuda": "cuDNN fused attention (jax.nn.dot_product_attention, implementation='cudnn'): "
            "causal; PHD: causal plus the dense mask as a bias",
    "tpu": "splash attention (jax.experimental.pallas.ops.tpu.splash_attention) with the "
           "causal or PHD mask as a block-sparse mask object",
    "xla": "XLA (jax.nn.dot_product_attention, implementation='xla'): causal; PHD: the dense "
           "mask",
}
SPLASH_BLOCK = 512  # splash's tiles where the length allows (MaxText's default); else 128
PALLAS_NA = ("the Pallas kernel is written for TPU (Mosaic); elsewhere it only runs in "
             "interpret mode, which is no timing")


def platform(device: jax.Device | None = None) -> str:
  """"cuda" (an NVIDIA GPU), "tpu", "cpu", or the backend's name for anything else."""
  device = device or jax.devices()[0]
  if device.platform == "gpu" and "nvidia" in device.device_kind.lower():
    return "cuda"
  return device.platform


def peer_name(plat: str) -> str:
  return PEERS.get(plat, PEERS["xla"])


@dataclasses.dataclass
class Path:
  """fn(q, k, v, *aux) -> out, with q [B, T, Hq, D] and k/v [B, T, Hkv, D] in the grouped
  layout; aux: arrays built once (masks, splash's kernel) that the timing leaves out. `na`: why
  the path cannot run on this platform (then fn is None)."""
  fn: Callable | None = None
  aux: tuple = ()
  na: str = ""


def ours(impl: str, spec: PHDSpec, plat: str, block_sizes: tuple[int, int] = (128, 128),
         xla_block: int = 256) -> Path:
  """Our "xla" path or "pallas" kernel (TPU only; compiled, never interpreted)."""
  if impl == "xla":
    return Path(lambda q, k, v: attention(q, k, v, spec, "xla", xla_block=xla_block))
  if impl == "pallas":
    if plat != "tpu":
      return Path(na=PALLAS_NA)
    return Path(lambda q, k, v: phd_flash_attention(q, k, v, spec, block_q=block_sizes[0],
                                                    block_kv=block_sizes[1], interpret=False))
  raise ValueError(f"impl={impl!r} is not one of ('xla', 'pallas')")


def peer(spec: PHDSpec, seq_len: int, num_heads: int, plat: str,
         dtype=jnp.bfloat16) -> Path:
  """The platform's best attention given spec's mask, for inputs of `dtype`; see the module
  docstring."""
  causal = spec.num_copies == 1
  if plat == "tpu":
    return Path(splash_attention, (splash_kernel(spec, seq_len, num_heads),))
  if plat == "cuda":
    if causal:
      return Path(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                               implementation="cudnn"))
    visible_ = jnp.asarray(dense_mask(spec, seq_len))
    bias = jnp.where(visible_, 0, MASK_VALUE).astype(dtype)[None, None]  # [1, 1, T, T]
    return Path(lambda q, k, v, bias: jax.nn.dot_product_attention(
        q, k, v, bias=bias, is_causal=True, implementation="cudnn"), (bias,))
  if causal:
    return Path(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                             implementation="xla"))
  mask = jnp.asarray(dense_mask(spec, seq_len))[None, None]  # [1, 1, T, T]
  return Path(lambda q, k, v, mask: jax.nn.dot_product_attention(q, k, v, mask=mask,
                                                                 implementation="xla"), (mask,))


def forward_backward(fn: Callable) -> Callable:
  """The forward and the backward of `fn`: the gradients of its output's sum wrt q, k, v."""
  def grads(q, k, v, *aux):
    return jax.grad(lambda q, k, v: fn(q, k, v, *aux).astype(jnp.float32).sum(),
                    argnums=(0, 1, 2))(q, k, v)
  return grads


# ----------------------------------------------------------------------------- splash attention


class PHDSplashMask(splash_mask._ComputableMask):  # pylint: disable=protected-access
  """The PHD visibility rules as a splash-attention mask object (evaluated per block)."""

  def __init__(self, spec: PHDSpec, seq_len: int):
    self.spec, self.seq_len = spec, seq_len
    total = spec.num_tokens(seq_len)

    def mask_function(q_ids, kv_ids):  # numpy on the host (block metadata), jax in the kernel
      host = isinstance(q_ids, np.ndarray)
      # In the kernel, truncating division (indices are never negative): Mosaic has no cheap
      # floor division, and its lowering of one asks which TPU it is for.
      xp, div, rem = (np, operator.floordiv, operator.mod) if host else (jnp, jax.lax.div,
                                                                          jax.lax.rem)
      kh = max(spec.num_copies - 1, 1)

      def coords(t):
        h = xp.maximum(t - seq_len, 0)
        return xp.where(t >= seq_len, div(h, kh), t), xp.where(t >= seq_len, rem(h, kh) + 1, 0)

      return visible(spec, *coords(q_ids), *coords(kv_ids), floordiv=div)

    super().__init__((total, total), mask_function)

  def __eq__(self, other):
    return isinstance(other, PHDSplashMask) and (self.spec, self.seq_len) == (other.spec,
                                                                               other.seq_len)

  def __hash__(self):
    return hash((self.spec, self.seq_len))


def splash_kernel(spec: PHDSpec, seq_len: int, num_heads: int, block: int | None = None,
                  interpret: bool = False) -> splash.SplashAttentionKernel:
  """Splash attention over spec's mask (CausalMask for K=1), forward and backward tiles of
  `block` (default SPLASH_BLOCK, or 128 where that does not divide the K*L tokens)."""
  total = spec.num_tokens(seq_len)
  if block is None:
    block = SPLASH_BLOCK if total % SPLASH_BLOCK == 0 else 128
  head = splash_mask.CausalMask((total, total)) if spec.num_copies == 1 \
      else PHDSplashMask(spec, seq_len)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  return splash.make_splash_mha(splash_mask.MultiHeadMask((head,) * num_heads), head_shards=1,
                                q_seq_shards=1, block_sizes=sizes, interpret=interpret)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     kernel: splash.SplashAttentionKernel) -> jax.Array:
  """q [B, T, Hq, D], k/v [B, T, Hkv, D] -> [B, T, Hq, D] through splash's kernel ([H, T, D]
  per sequence, the query pre-scaled by 1/sqrt(D) as splash expects)."""
  t = lambda x: jnp.swapaxes(x, 1, 2)  # [B, T, H, D] <-> [B, H, T, D]
  out = jax.vmap(kernel)(t(q) / math.sqrt(q.shape[-1]), t(k), t(v))
  return t(out)
