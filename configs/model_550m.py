"""The 550m model; pick a variant with --config=configs/model_550m.py:VARIANT (default phd_swa)."""
from configs import sizes


def get_config(variant: str = "phd_swa"):
  return sizes.sized_config("550m", variant)
