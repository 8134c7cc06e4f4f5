"""A finished (or running) run, loaded for inference: its model, its config, its step.

What generate, evaluate and the OLMo2 export read. Only the parameters are restored (no
optimizer state), onto this process's first device, whatever mesh the run trained on. A newest
step that does not load (damaged files) is skipped with a warning naming it and left in place:
these commands only read; the next training start moves it aside.
"""
from __future__ import annotations

import ml_collections
from flax import nnx

from phd_jax import files as fs
from phd_jax.checkpoints.checkpoint import Checkpointer, Log, warn
from phd_jax.model.transformer import Transformer


def load_run(workdir: str, log: Log = warn, *, probed: bool = False
             ) -> tuple[Transformer, ml_collections.ConfigDict, int]:
  """(model, the config it was trained with, step) of the newest checkpoint in `workdir` that
  loads; each newer one skipped is named in a `log` line (stderr by default). `probed`: the
  caller has checked the workdir's bucket (fs.check_access) already."""
  if not probed:
    fs.check_access(workdir, "--workdir")  # a bucket out of reach: one line, not retries
  directory = fs.join(workdir, "checkpoints")
  if not fs.isdir(directory):
    raise ValueError(f"no checkpoints in {workdir} (expected {directory}); train first")
  ckpt = Checkpointer(workdir, keep=1)

  def load(step: int) -> tuple[Transformer, ml_collections.ConfigDict]:
    cfg = ckpt.saved_config(step)
    # Shapes only: the restore fills in the model's arrays and reads no optimizer state.
    abstract = nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(0)))
    graphdef, abstract = nnx.split(abstract)
    return nnx.merge(graphdef, ckpt.restore_params(step, abstract)), cfg

  try:
    found = ckpt.restore_newest(load, log=log, move_aside=False)
  finally:
    ckpt.close()
  if found is None:
    raise ValueError(f"no complete checkpoint in {directory}")
  step, (model, cfg) = found
  return model, cfg, step
