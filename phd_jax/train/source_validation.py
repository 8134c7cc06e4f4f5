"""Validation per data source: each source's held-out windows scored on their own.

A mixture's single validation number hides which domain a change helps or hurts (OLMo reports
bits per byte per domain in-loop for this reason). Each source of `data.mixture` is scored on
config.train.val_batches batches of its own validation split: `val/<source>/loss` and
`val/<source>/bits_per_byte`. `val_loss` and `val_bits_per_byte` are then the sources' weighted
mean, with the mixture's base weights (data.mixture.<source>.weight, not the schedule's): fixed
for the whole run, so the curve compares across steps and across runs with other schedules. A
single data source (stdlib, text_files, tokens) reports exactly what validation.Validator does.
"""
from __future__ import annotations

from phd_jax.config.defaults import LOSS_CHUNK
from phd_jax.train.validation import Validator


class SourceValidator(Validator):
  """`validator(state)` -> the weighted mean over the sources and, for a mixture, each one's."""

  def __init__(self, graphdef, token_bytes, batches: dict[str, list], weights: dict[str, float],
               per_source: bool, mesh, axis_rules, state_sharding=None, batch_sharding=None,
               loss_chunk: int = LOSS_CHUNK):
    super().__init__(graphdef, token_bytes, [], mesh, axis_rules, state_sharding, batch_sharding,
                     loss_chunk)  # one jitted function scores every source
    self.by_source, self.weights, self.per_source = batches, weights, per_source

  def __call__(self, state) -> dict[str, float]:
    scores = {name: self.score(state, batches) for name, batches in self.by_source.items()}
    total = sum(self.weights.values())
    out = {k: sum(self.weights[n] * s[k] for n, s in scores.items()) / total
           for k in ("val_loss", "val_bits_per_byte")}
    if self.per_source:
      for name, s in scores.items():
        out[f"val/{name}/loss"] = s["val_loss"]
        out[f"val/{name}/bits_per_byte"] = s["val_bits_per_byte"]
    return out


def for_session(session) -> SourceValidator:
  """The validator of a training session (phd_jax/train/setup.py's TrainSession)."""
  s, data = session, session.data
  return SourceValidator(s.graphdef, s.tokenizer.token_bytes(), s.val_batches,
                         {src.name: src.weight for src in data.sources}, data.named, s.mesh,
                         s.axis_rules, s.state_sharding, s.batch_sharding, s.cfg.train.loss_chunk)


def describe(metrics: dict) -> str:
  """' (code 1.2345, web 1.5678)': each source's bits/byte, for the console; '' for one source."""
  parts = [f"{k[4:-len('/bits_per_byte')]} {v:.4f}" for k, v in metrics.items()
           if k.startswith("val/") and k.endswith("/bits_per_byte")]
  return f" ({', '.join(parts)})" if parts else ""
