"""Configs saved by earlier versions, brought up to the current fields in one place.

A run's config is read back from its checkpoint (to resume, generate, evaluate or export it).
Fields renamed since are moved to their new names, and fields added since get the value that
reproduces how such a run trained, so no other code special-cases old runs.
"""
from __future__ import annotations

import ml_collections

from phd_jax.config.defaults import XLA_BLOCK, default_config

# (section, old name) -> new name.
RENAMED = {
    ("train", "eval_every"): "val_every",  # validation loss, apart from the lm-eval evals (eval.*)
    ("train", "eval_batches"): "val_batches",
}
# (section, field) -> the value a run saved before the field existed trained with.
ADDED = {
    ("model", "qk_norm"): "head",  # the model normed per head before the field existed
    ("model", "xla_block"): XLA_BLOCK,
    ("data", "tokenizer"): "bytes",
    ("train", "init_from"): "",  # started from scratch (or from an import's step-0 checkpoint)
    ("data", "mixture"): {},  # data mixtures (phd_jax/data/mixture.py)
    ("data", "mixture_schedule"): (),
    ("train", "local_checkpoint_every"): 0,  # no node-local tier (phd_jax/checkpoints/tiers.py)
    ("train", "local_checkpoint_dir"): "",
    ("train", "keep_local_checkpoints"): 2,
    ("log", "wandb"): default_config().log.wandb.to_dict(),  # mode "off": TensorBoard only
}


def upgrade(saved: dict) -> ml_collections.ConfigDict:
  """A saved config (a plain dict, as JSON holds it) with current field names and every field."""
  cfg = {section: dict(fields) if isinstance(fields, dict) else fields
         for section, fields in saved.items()}
  for (section, old), new in RENAMED.items():
    fields = cfg.get(section)
    if isinstance(fields, dict) and old in fields:
      fields.setdefault(new, fields.pop(old))
  for (section, field), value in ADDED.items():
    cfg.setdefault(section, {}).setdefault(field, value)  # a section added since: created
  return ml_collections.ConfigDict(cfg)
