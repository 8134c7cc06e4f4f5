"""PHD: K copies per token; hidden copies see the originals and their own position's copies."""
from configs import base


def get_config():
  cfg = base.get_config()
  cfg.model.phd.variant = "phd"
  cfg.model.phd.num_copies = 2
  return cfg
