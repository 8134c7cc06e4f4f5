"""Naive length scaling (paper Fig. 1): full causal attention over K*L tokens; K-fold KV cache."""
from configs import base


def get_config():
  cfg = base.get_config()
  cfg.model.phd.variant = "repeat"
  cfg.model.phd.num_copies = 2
  return cfg
