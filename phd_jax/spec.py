"""The PHD spec: which variant, how many copies (K), the window (W) and the chunk (C).

The one value every layer of the code is parameterised by (masks, kernels, model, cache). It is
validated on construction, so a bad config fails before anything compiles. docs/method.md defines
the variants and their integers.
"""
from __future__ import annotations

import dataclasses

import numpy as np

VARIANTS = ("vanilla", "phd", "phd_swa", "phd_cswa", "repeat")
POSITION_SCHEMES = ("shared", "interleaved")


@dataclasses.dataclass(frozen=True)
class PHDSpec:
  """Which tokens see which: the variant and its three integers.

  Validated on construction so a bad config fails before anything compiles.
  """

  variant: str
  num_copies: int
  window: int = 0
  chunk: int = 0

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"variant={self.variant!r} is not one of {VARIANTS}")
    for name in ("num_copies", "window", "chunk"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be an int")
    if self.num_copies < 1:
      raise ValueError(f"num_copies={self.num_copies} must be >= 1")
    if self.variant == "vanilla" and self.num_copies != 1:
      raise ValueError(
          f"num_copies={self.num_copies} with variant='vanilla': vanilla has exactly 1 copy "
          "(use variant 'phd', 'phd_swa', 'phd_cswa' or 'repeat' for K > 1)")
    if self.has_window and self.window < 1:
      raise ValueError(f"window={self.window} with variant={self.variant!r}: must be >= 1 "
                       "(it counts hidden tokens)")
    if not self.has_window and self.window != 0:
      raise ValueError(f"window={self.window} with variant={self.variant!r}: only phd_swa and "
                       "phd_cswa use a window; set window=0")
    if self.chunked and self.chunk < 1:
      raise ValueError(f"chunk={self.chunk} with variant='phd_cswa': must be >= 1 "
                       "(it counts positions)")
    if not self.chunked and self.chunk != 0:
      raise ValueError(f"chunk={self.chunk} with variant={self.variant!r}: only phd_cswa uses "
                       "chunks; set chunk=0")

  # What each variant does, asked by the masks, the attention paths, the kernels and the cache
  # (docs/method.md, Visibility rules and KV cache). Code asks these, never the variant's name.

  @property
  def has_window(self) -> bool:
    """Rule W: hidden tokens also read the last W hidden tokens, across positions, and the
    decode cache keeps them in a ring (phd_swa, phd_cswa)."""
    return self.variant in ("phd_swa", "phd_cswa")

  @property
  def chunked(self) -> bool:
    """Rule C: the window stops at chunk borders of C positions (phd_cswa)."""
    return self.variant == "phd_cswa"

  @property
  def interleaved_causal(self) -> bool:
    """Visibility is plain causal attention over the interleaved order n*K + j, not rules
    G/S/W/C: the naive baseline of a K times longer sequence (repeat)."""
    return self.variant == "repeat"

  @property
  def caches_every_copy(self) -> bool:
    """The decode cache keeps the K/V of every copy, not only the originals' (repeat: a K times
    longer sequence caches all of it, the cost PHD avoids)."""
    return self.variant == "repeat"

  @property
  def cache_slots_per_position(self) -> int:
    """Global-cache entries per position: K when every copy is cached, else 1 (the original)."""
    return self.num_copies if self.caches_every_copy else 1

  @property
  def hidden_copies(self) -> int:
    return self.num_copies - 1

  @property
  def hidden_reach(self) -> int:
    """How far back in the hidden stream a hidden token reads (docs/method.md: D = max(W, K-2))."""
    return max(self.window, self.num_copies - 2)

  def num_tokens(self, seq_len: int) -> int:
    return self.num_copies * seq_len
