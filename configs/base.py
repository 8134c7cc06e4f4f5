"""The library's defaults (phd_jax/config/defaults.py); experiment files start from here.

Override any field from the command line, the ml_collections way:
  phd-train --config=configs/phd_cswa.py --config.model.phd.num_copies=3
"""
from phd_jax.config import default_config


def get_config():
  return default_config()
