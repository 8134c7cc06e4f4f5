"""A data mixture of three sources every Python installation has (docs/data.md, "Mixtures"):
the standard library's code, the installed packages' descriptions (prose) and their licenses
(legal), weighted 2 : 2 : 1 and, from step 200 on, 1 : 3 : 1 (a late shift toward prose).

  python -m experiments.mixture_data --out=data/mixture       # phd-prepare each source, offline
  phd-data --config=configs/mixture.py --step=1 --windows=4    # what the model reads first
  phd-train --config=configs/mixture.py --workdir=runs/mixture
  phd-train --config=configs/mixture.py:/elsewhere/mixture --config.data.mixture.code.weight=3

The argument is the folder holding the sources (default data/mixture). Validation scores each
source on its own: val/code/bits_per_byte, val/prose/..., val/legal/... in metrics.jsonl.
"""
import ml_collections

from configs import quickstart


def get_config(root: str = "data/mixture"):
  cfg = quickstart.get_config()  # PHD-CSWA K=2, small enough for 2 CPU cores
  cfg.data.source = "mixture"
  cfg.data.mixture = ml_collections.ConfigDict({
      "code": {"path": f"{root}/code", "weight": 2.0},
      "prose": {"path": f"{root}/prose", "weight": 2.0},
      "legal": {"path": f"{root}/legal", "weight": 1.0},
  })
  cfg.data.mixture_schedule = ((200, {"code": 1.0, "prose": 3.0}),)
  return cfg
