"""Text from a trained run: `python -m phd_jax.generate --workdir=RUN --prompt "def "`.

Restores the latest checkpoint in the workdir together with the config it was trained with, then
samples with the KV-cached decoder (phd_jax.decode.generate).
"""
from __future__ import annotations

import os
import sys

import ml_collections
from absl import app, flags, logging
from flax import nnx

from phd_jax import decode, tokenizers
from phd_jax.checkpoint import Checkpointer
from phd_jax.model import Transformer

def load_model(workdir: str) -> tuple[Transformer, int]:
  """The model of the latest checkpoint in `workdir`, built from its saved config."""
  model, _, step = load_run(workdir)
  return model, step


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


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("error: --workdir is required")
  try:
    model, cfg, step = load_run(f.workdir)
    tok = tokenizers.for_run(f.workdir, cfg)  # the run's own tokenizer, saved at training start
    prompts = [tok.encode(p) for p in f.prompt]
    out, n = decode.generate(model, prompts, f.max_new_tokens, temperature=f.temperature,
                             top_k=f.top_k, top_p=f.top_p, seed=f.seed, eos_id=tok.eos_id)
  except ValueError as e:
    sys.exit(f"error: {e}")
  print(f"# {f.workdir}, checkpoint step {step}")
  for prompt, ids, length in zip(f.prompt, out, n):
    print(f"----- prompt {prompt!r} -----\n{prompt}{tok.decode(ids[:length])}")


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training run directory (holds checkpoints/).")
  flags.DEFINE_multi_string("prompt", ["def "], "Prompt text; repeat for a batch.")
  flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate per prompt.")
  flags.DEFINE_float("temperature", 0.7, "Sampling temperature; 0 is greedy.")
  flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: all).")
  flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass in (0, 1] (1: all).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
