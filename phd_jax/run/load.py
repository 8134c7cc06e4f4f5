"""A finished (or running) run, loaded for inference: its model, its config, its step.

What generate, evaluate and the OLMo2 export read. Only the parameters are restored (no
optimizer state), onto this process's first device, whatever mesh the run trained on.
"""
from __future__ import annotations

import os

import ml_collections
from flax import nnx

from phd_jax.model.transformer import Transformer
from phd_jax.run.checkpoint import Checkpointer


def load_run(workdir: str) -> tuple[Transformer, ml_collections.ConfigDict, int]:
  """(model, the config it was trained with, step) of the latest checkpoint in `workdir`."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise ValueError(f"no checkpoints in {workdir} (expected {directory}); train first")
  ckpt = Checkpointer(workdir, keep=1)
  step = ckpt.latest_step()
  if step is None:
    raise ValueError(f"no complete checkpoint in {directory}")
  cfg = ckpt.saved_config(step)
  # Shapes only: the restore fills in the model's arrays and reads no optimizer state.
  abstract = nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(0)))
  graphdef, abstract = nnx.split(abstract)
  state = ckpt.restore_params(step, abstract)
  ckpt.close()
  return nnx.merge(graphdef, state), cfg, step
