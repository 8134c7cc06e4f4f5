"""Model FLOPs per training step and the devices' peak FLOP/s: what MFU and the sweeps divide.

One count for the whole repo (the sweeps' FLOP axes, the training loop's TFLOP/s and MFU): the
work the method needs, not what an implementation happens to spend (remat recomputation and
masked-out attention blocks are not counted).
"""
from __future__ import annotations

import ml_collections

from phd_jax.config import phd_spec
from phd_jax.masks import visible_pairs

# Dense bf16 peak FLOP/s per chip, from the vendors' data sheets. Matched against
# jax.Device.device_kind by substring, most specific first (e.g. "TPU v5 lite" is v5e).
PEAK_BF16_FLOPS = (
    ("TPU v6", 918e12),  # v6e (Trillium): "TPU v6 lite" / "TPU v6e"
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),  # v5p reports "TPU v5"
    ("TPU v4", 275e12),
    ("H200", 989e12),  # SXM; dense (no sparsity)
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
)


def step_flops(cfg: ml_collections.ConfigDict) -> float:
  """Training FLOPs of one step: 3x the forward's matmuls, attention counted by visible pairs.

  The attention term counts the (query, key) pairs the variant's mask allows, so it is the
  work the method needs, whatever the implementation spends. Counts the global batch
  (`train.batch_size`), however it is split into microbatches or over devices.
  """
  m, t = cfg.model, cfg.train
  spec = phd_spec(m)
  tokens = spec.num_tokens(t.seq_len)
  q, kv = m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
  per_token = 2 * m.d_model * (2 * q + 2 * kv) + 2 * 3 * m.d_model * m.mlp_dim  # qkvo + SwiGLU
  pairs = float(visible_pairs(spec, t.seq_len))
  attention = 2 * 2 * q * pairs  # scores and values
  logits = 2 * m.d_model * m.vocab_size * t.seq_len  # the last copy only
  return 3.0 * t.batch_size * (m.num_layers * (per_token * tokens + attention) + logits)


def peak_flops(device_kind: str) -> float | None:
  """bf16 peak FLOP/s of one chip of this kind, or None when unknown (CPUs, other GPUs)."""
  for key, peak in PEAK_BF16_FLOPS:
    if key.lower() in device_kind.lower():
      return peak
  return None


class Throughput:
  """Achieved TFLOP/s (always) and MFU (when every device's peak is known) of a step rate."""

  def __init__(self, cfg: ml_collections.ConfigDict, devices: list):
    self.flops = step_flops(cfg)
    peaks = [peak_flops(d.device_kind) for d in devices]
    self.peak = None if None in peaks else sum(peaks)

  def __call__(self, steps_per_s: float) -> dict:
    achieved = self.flops * steps_per_s
    row = {"tflops_per_s": achieved / 1e12}
    if self.peak:
      row["mfu"] = achieved / self.peak
    return row
