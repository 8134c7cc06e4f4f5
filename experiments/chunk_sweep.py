"""Does chunking the hidden tokens' window cost loss? (paper Fig. 7: C in 16, 32, none nearly equal)

PHD-CSWA at K=2, W=16 with chunks of C positions, and without chunks (PHD-SWA, W=16), against
vanilla; the same recipe as k_sweep.py and window_sweep.py, sharing their runs under one --out.
What chunking buys at inference (prefill that does not grow with K) is measured by latency.py.

  python experiments/chunk_sweep.py --quick --out=/tmp/chunk_sweep
  python experiments/chunk_sweep.py --out=results/sweeps
"""
from __future__ import annotations

import common
from common import Run

CHUNKS = (16, 32)


def runs() -> list[Run]:
  return ([Run("vanilla", "vanilla")]
          + [Run(f"phd_cswa K=2 W=16 C={c}", "phd_cswa", 2, 16, c) for c in CHUNKS]
          + [Run("phd_swa K=2 W=16 (C=none)", "phd_swa", 2, 16)])


if __name__ == "__main__":
  common.main(__doc__.split("\n\n")[0], runs(), "chunk_sweep",
              "Chunk sweep: PHD-CSWA, K=2, W=16", xlabel="chunk C (positions)")
