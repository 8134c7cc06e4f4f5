"""The tiny model; pick a variant with --config=configs/model_tiny.py:VARIANT (default phd_cswa)."""
from configs import sizes


def get_config(variant: str = "phd_cswa"):
  return sizes.sized_config("tiny", variant)
