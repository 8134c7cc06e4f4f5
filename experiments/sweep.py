"""The command line every sweep shares: its flags, their checks, and the whole run of a sweep
(train what is missing with experiments/runner.py, then write experiments/report.py's files).

  python -m experiments.k_sweep --quick --out=/tmp/k_sweep [--seeds=2 --steps=N]
"""
from __future__ import annotations

from collections.abc import Callable

from absl import flags

from experiments import cli, report, runner

_QUICK = flags.DEFINE_bool(
    "quick", False, "Small model and few steps: the whole sweep in minutes on 2 CPU cores.")
_OUT = flags.DEFINE_string("out", "runs/experiments", "Output folder (runs/, CSV, PNG, table).")
_SEEDS = flags.DEFINE_integer("seeds", 2, "Seeds per run (>= 2 gives a spread).")
_STEPS = flags.DEFINE_integer("steps", None, "Override the scale's training steps (>= 2).")
_KEEP_CHECKPOINTS = flags.DEFINE_bool(
    "keep_checkpoints", False, "Keep each run's last checkpoint (default: delete it once the "
    "run is done).")


def settings() -> runner.Settings:
  """The flags as a sweep's settings; --steps changes the scale's recipe."""
  seeds = cli.at_least(_SEEDS, 1)
  scale = "quick" if _QUICK.value else "full"
  if _STEPS.value is not None:
    runner.set_steps(scale, cli.at_least(_STEPS, 2))
  return runner.Settings(scale, _OUT.value, seeds, _KEEP_CHECKPOINTS.value)


def main(argv: list[str], runs: list[runner.Arm] | Callable[[str], list[runner.Arm]], stem: str,
         title: str, xlabel: str = "", by_flops: bool = False) -> None:
  """A sweep script's main: train every run not yet done, write CSV, PNG and table into --out.

  `runs` is a list of Runs, or a function of the scale that returns one.
  """
  cli.no_positional(argv)
  s = settings()
  finals, rows = runner.run_sweep(runs(s.scale) if callable(runs) else runs, s)
  report.write_outputs(s, stem, title, finals, rows, reference="vanilla", xlabel=xlabel,
                       by_flops=by_flops)
