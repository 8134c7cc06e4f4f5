"""How wide must the hidden tokens' window be? (paper Fig. 6: W 1 -> 4 helps most, 16 a little more)

PHD-SWA at K=2 with W hidden tokens, against vanilla and against PHD (every hidden token visible,
"W=all"); same model, batches and original tokens as k_sweep, whose runs it reuses when both
are given one --out.

  python -m experiments.window_sweep --quick --out=/tmp/window_sweep
  python -m experiments.window_sweep --out=results/sweeps
"""
from __future__ import annotations

from absl import flags

from experiments import sweep
from experiments.runner import Arm
from phd_jax.cli import common

flags.adopt_module_key_flags(sweep)  # --help lists the sweep's flags

WINDOWS = (1, 2, 4, 16)


def runs() -> list[Arm]:
  return ([Arm("vanilla", "vanilla")]
          + [Arm(f"phd_swa K=2 W={w}", "phd_swa", 2, w) for w in WINDOWS]
          + [Arm("phd K=2 (W=all)", "phd", 2)])


def main(argv: list[str]) -> None:
  sweep.main(argv, runs(), "window_sweep", "Window sweep: PHD-SWA, K=2",
             xlabel="hidden-token window W")


if __name__ == "__main__":
  common.launch(main)
