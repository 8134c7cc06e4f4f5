"""The 151m model; pick a variant with --config=configs/model_151m.py:VARIANT (default phd_cswa)."""
from configs import sizes


def get_config(variant: str = "phd_cswa"):
  return sizes.sized_config("151m", variant)
