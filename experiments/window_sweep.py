"""How wide must the hidden tokens' window be? (paper Fig. 6: W 1 -> 4 helps most, 16 a little more)

PHD-SWA at K=2 with W hidden tokens, against vanilla and against PHD (every hidden token visible,
"W=all"); same model, batches and original tokens as k_sweep.py, whose runs it reuses when both
are given one --out.

  python experiments/window_sweep.py --quick --out=/tmp/window_sweep
  python experiments/window_sweep.py --out=results/sweeps
"""
from __future__ import annotations

import common
from common import Run

WINDOWS = (1, 2, 4, 16)


def runs() -> list[Run]:
  return ([Run("vanilla", "vanilla")]
          + [Run(f"phd_swa K=2 W={w}", "phd_swa", 2, w) for w in WINDOWS]
          + [Run("phd K=2 (W=all)", "phd", 2)])


if __name__ == "__main__":
  common.main(__doc__.split("\n\n")[0], runs(), "window_sweep", "Window sweep: PHD-SWA, K=2",
              xlabel="hidden-token window W")
