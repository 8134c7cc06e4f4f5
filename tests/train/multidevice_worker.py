"""Runs in a subprocess with simulated CPU devices (XLA_FLAGS); prints one JSON line of results.

Used by test_scaling.py: the device count must be fixed before JAX starts, so it can't run in
the pytest process.
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phd_jax.cli.common import libraries_loaded
from phd_jax.config.mesh import rules
from phd_jax.data import text, windows
from phd_jax.inference.decode import generate
from phd_jax.model import sharding
from phd_jax.model.attention import attention
from phd_jax.model.losses import lm_loss
from phd_jax.spec import PHDSpec
from phd_jax.train.grad_accum import loss_and_grads
from phd_jax.train.loop import train_and_evaluate
from phd_jax.train.state import create_state
from tests.helpers import (  # the test's own helpers (PYTHONPATH: the repository)
  PROMPTS,
  WIDE_RUN,
  Preempted,
  losses,
  preempt_after,
  tiny_config,
)


def main(corpus_glob: str, out: str) -> None:
  results = {"devices": jax.device_count()}
  for shape in ((8, 1, 1), (2, 2, 2), (1, 4, 2)):
    cfg = tiny_config(corpus_glob, **WIDE_RUN)
    cfg.mesh.update(data=shape[0], fsdp=shape[1], tensor=shape[2])
    name = "x".join(map(str, shape))
    train_and_evaluate(cfg, os.path.join(out, name))
    results[name] = losses(os.path.join(out, name))
    _, state = create_state(cfg, sharding.make_mesh(cfg.mesh))
    q = state[0]["layers"][0]["attn"]["q_proj"]["kernel"]
    emb = state[0]["embed"]["embedding"]
    results[f"{name}_specs"] = [str(q.sharding.spec), str(emb.sharding.spec)]
  # Preempted on data=8 after the step-3 checkpoint, resumed on fsdp=4 x tensor=2.
  cfg = tiny_config(corpus_glob, **WIDE_RUN, checkpoint_every=3)
  cfg.mesh.update(data=8, fsdp=1, tensor=1)
  try:
    train_and_evaluate(cfg, os.path.join(out, "moved"), on_step=preempt_after(4))
  except Preempted:
    pass
  cfg.mesh.update(data=1, fsdp=4, tensor=2)
  train_and_evaluate(cfg, os.path.join(out, "moved"))
  results["moved"] = losses(os.path.join(out, "moved"))
  # The Pallas path shard_map'ed over batch and heads, and decoding with a sharded cache.
  cfg = tiny_config(corpus_glob, batch_size=8)
  cfg.mesh.update(data=2, fsdp=2, tensor=2)
  mesh, axis_rules = sharding.make_mesh(cfg.mesh), rules(cfg.mesh)
  spec = PHDSpec("phd_cswa", 2, window=4, chunk=3)
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(4, 20, h, 16)), jnp.float32) for h in (4, 2, 2))
  with sharding.activate(mesh, axis_rules):
    out = jax.jit(lambda q, k, v: attention(q, k, v, spec, "pallas", (8, 8)))(q, k, v)
  results["pallas_sharded_err"] = float(jnp.abs(out - attention(q, k, v, spec, "dense")).max())
  graphdef, state = create_state(cfg, mesh)
  with sharding.activate(mesh, axis_rules):
    ids, _ = generate(nnx.merge(graphdef, state)[0], PROMPTS, 6, eos_id=None)
  results["generated"] = ids.tolist()
  results["accum_err"] = grad_accum_on_mesh(corpus_glob)
  print("RESULTS " + json.dumps(results), flush=True)


def grad_accum_on_mesh(corpus_glob: str) -> float:
  """Largest relative gap: batch 16 as 4 microbatches on a 2x2x2 mesh vs one batch, 1 device."""
  cfg = tiny_config(corpus_glob, batch_size=16)
  corpus = text.load_corpus(cfg.data)
  batch = {k: jnp.asarray(v) for k, v in
           next(iter(windows.train_dataset(corpus.train, 32, 16, seed=0))).items()}
  model = nnx.merge(*create_state(cfg))[0]  # one device
  reference = jax.jit(lambda b: loss_and_grads(lm_loss, model, b, cfg.train))(batch)
  cfg.train.grad_accum_steps = 4
  cfg.mesh.update(data=2, fsdp=2, tensor=2)
  mesh, axis_rules = sharding.make_mesh(cfg.mesh), rules(cfg.mesh)
  graphdef, state = create_state(cfg, mesh)
  batch_sh = sharding.batch_sharding(mesh, axis_rules)
  step = jax.jit(lambda s, b: loss_and_grads(lm_loss, nnx.merge(graphdef, s)[0], b, cfg.train),
                 in_shardings=(jax.tree.map(lambda x: x.sharding, state), batch_sh))
  with sharding.activate(mesh, axis_rules):
    got = step(state, sharding.global_batch({k: np.asarray(v) for k, v in batch.items()},
                                             batch_sh))
  pairs = [(got[0], reference[0])] + list(zip(jax.tree.leaves(got[2]),
                                               jax.tree.leaves(reference[2])))
  assert len(pairs) > 10
  return max(float(jnp.abs(a - b).max() / (jnp.abs(b).max() + 1e-12)) for a, b in pairs)


if __name__ == "__main__":
  libraries_loaded()  # as the phd-* commands do
  main(sys.argv[1], sys.argv[2])
