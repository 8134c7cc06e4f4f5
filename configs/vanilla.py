"""Vanilla transformer (K = 1): the baseline every PHD variant is compared with."""
from configs import base


def get_config():
  return base.get_config()
