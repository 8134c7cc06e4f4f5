"""Does chunking the hidden tokens' window cost loss? (paper Fig. 7: C in 16, 32, none nearly equal)

PHD-CSWA at K=2, W=16 with chunks of C positions, and without chunks (PHD-SWA, W=16), against
vanilla; the same recipe as k_sweep and window_sweep, sharing their runs under one --out.
What chunking buys at inference (prefill that does not grow with K) is measured by latency.

  python -m experiments.chunk_sweep --quick --out=/tmp/chunk_sweep
  python -m experiments.chunk_sweep --out=results/sweeps
"""
from __future__ import annotations

from absl import flags

from experiments import sweep
from experiments.runner import Arm
from phd_jax.cli import common

flags.adopt_module_key_flags(sweep)  # --help lists the sweep's flags

CHUNKS = (16, 32)


def runs() -> list[Arm]:
  return ([Arm("vanilla", "vanilla")]
          + [Arm(f"phd_cswa K=2 W=16 C={c}", "phd_cswa", 2, 16, c) for c in CHUNKS]
          + [Arm("phd_swa K=2 W=16 (C=none)", "phd_swa", 2, 16)])


def main(argv: list[str]) -> None:
  sweep.main(argv, runs(), "chunk_sweep", "Chunk sweep: PHD-CSWA, K=2, W=16",
             xlabel="chunk C (positions)")


if __name__ == "__main__":
  common.launch(main)
