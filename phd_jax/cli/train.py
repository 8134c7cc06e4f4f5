"""phd-train: pretrain (or resume) a run.

  phd-train --config=configs/quickstart.py --workdir=runs/demo [--config.train.steps=600]

Running the same command again resumes from the latest checkpoint; without --config, a run
resumes with the config saved in its workdir. A new run starts from other weights (a run's step,
`phd-hf import`'s weights, an OLMo2 folder) with --config.train.init_from=PATH[:STEP].
"""
from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from phd_jax.cli import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (a get_config() module, e.g. configs/quickstart.py); "
    "default: the config saved in --workdir.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, tb/.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Multi-host: detect peers (TPU pods, SLURM, MPI).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "Multi-host: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id.")


def _main(argv: list[str]) -> None:
  del argv
  # JAX and the library load here, not at import: --help and a missing flag answer at once.
  from phd_jax.model import sharding
  from phd_jax.train import goodput
  from phd_jax.train.guard import DivergenceError
  from phd_jax.train.loop import train_and_evaluate
  common.libraries_loaded()

  started = goodput.process_start()  # the accounting counts the start-up
  sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                  auto=_DISTRIBUTED.value)
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value,  # no --config: the workdir's saved one
                       started=started)
  except DivergenceError as e:  # an expected end: one error line, as for a bad config
    raise ValueError(str(e)) from None


def main() -> None:
  common.launch(_main, required=["workdir"])


if __name__ == "__main__":
  main()
