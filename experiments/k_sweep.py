"""Does PHD lower the loss at equal training tokens, and more as K grows? (paper Tables 1-2, Fig. 1)

Vanilla, the naive repeat baseline (K=2), PHD (K=2) and PHD-CSWA (K=2, 3; W=16, C=32) train the
same model on the same batches for the same number of original tokens. One more row asks what
the paper leaves open: a vanilla model given the training FLOPs of PHD-CSWA K=2, spent on more
steps (more original tokens; same parameters and the same KV cache as every PHD row).

  python -m experiments.k_sweep --quick --out=/tmp/k_sweep     # minutes
  python -m experiments.k_sweep --out=results/sweeps           # docs/results.md's run
"""
from __future__ import annotations

from absl import flags

from experiments import sweep
from experiments.runner import Arm, config, step_flops
from phd_jax.cli import common

flags.adopt_module_key_flags(sweep)  # --help lists the sweep's flags

CSWA_K2 = Arm("phd_cswa K=2", "phd_cswa", 2, 16, 32)


def runs(scale: str) -> list[Arm]:
  matched = step_flops(config(CSWA_K2, scale, 0)) / step_flops(config(Arm("", "vanilla"), scale, 0))
  return [
      Arm("vanilla", "vanilla"),
      Arm("repeat K=2", "repeat", 2),
      Arm("phd K=2", "phd", 2),
      CSWA_K2,
      Arm("phd_cswa K=3", "phd_cswa", 3, 16, 32),
      Arm(f"vanilla, FLOPs of cswa K=2 ({matched:.2f}x steps)", "vanilla",
          steps_scale=round(matched, 2)),
  ]


def main(argv: list[str]) -> None:
  sweep.main(argv, runs, "k_sweep", "K sweep: equal original tokens", by_flops=True)


if __name__ == "__main__":
  common.launch(main)
