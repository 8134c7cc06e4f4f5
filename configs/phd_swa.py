"""PHD-SWA: PHD plus a sliding window of W hidden tokens (paper: W = 16)."""
from configs import base


def get_config():
  cfg = base.get_config()
  cfg.model.phd.variant = "phd_swa"
  cfg.model.phd.num_copies = 2
  cfg.model.phd.window = 16
  return cfg
