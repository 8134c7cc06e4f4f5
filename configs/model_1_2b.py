"""The 1.2b model; pick a variant with --config=configs/model_1_2b.py:VARIANT (default phd_cswa)."""
from configs import sizes


def get_config(variant: str = "phd_cswa"):
  return sizes.sized_config("1.2b", variant)
