"""PHD-CSWA: PHD-SWA with the window cut at chunks of C positions (paper: W = 16, C = 32)."""
from configs import base


def get_config():
  cfg = base.get_config()
  cfg.model.phd.variant = "phd_cswa"
  cfg.model.phd.num_copies = 2
  cfg.model.phd.window = 16
  cfg.model.phd.chunk = 32
  return cfg
