"""Pretraining: `python -m phd_jax.train --config=configs/quickstart.py --workdir=runs/demo`.

Running the same command again resumes from the latest checkpoint in the workdir.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from phd_jax import data, sharding
from phd_jax.checkpoint import Checkpointer, check_compatible
from phd_jax.config import validate_config
from phd_jax.losses import lm_loss
from phd_jax.model import Transformer, param_count
from phd_jax.decode import generate

LN2 = math.log(2.0)


def make_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW, linear warmup then cosine decay, global-norm clipping; no decay on vectors (norms)."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, t.learning_rate, t.warmup_steps, max(t.steps, t.warmup_steps + 1),
      end_value=t.learning_rate * t.end_lr_fraction)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(t.grad_clip),
      optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay, mask=decay_mask))


def loss_fn(model: Transformer, batch: dict, t: ml_collections.ConfigDict | None = None
            ) -> tuple[jax.Array, dict]:
  """(loss, aux scalars): chunked last-copy cross-entropy plus the optional z-loss (losses.py)."""
  return lm_loss(model, batch, t)


def make_steps(graphdef: nnx.GraphDef, state_sharding=None, batch_sharding=None,
               t: ml_collections.ConfigDict | None = None):
  """Pure jitted train and eval steps over the split (model, optimizer) state.

  With shardings, the steps are compiled for them (state and batch laid out on the mesh).
  t: the train config (loss chunk, z-loss); None takes the defaults.
  """

  @functools.partial(jax.jit, donate_argnums=0, in_shardings=(state_sharding, batch_sharding),
                     out_shardings=(state_sharding, None))
  def train_step(state: nnx.State, batch: dict):
    model, optimizer = nnx.merge(graphdef, state)
    (loss, aux), grads = nnx.value_and_grad(functools.partial(loss_fn, t=t), has_aux=True)(
        model, batch)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), {"loss": loss, "grad_norm": optax.tree.norm(grads),
                                           **aux}

  @functools.partial(jax.jit, in_shardings=(state_sharding, batch_sharding))
  def eval_step(state: nnx.State, batch: dict) -> jax.Array:
    model, _ = nnx.merge(graphdef, state)
    return loss_fn(model, batch, t)[1]["ce"]

  return train_step, eval_step


def init_train_objects(cfg: ml_collections.ConfigDict) -> tuple[Transformer, nnx.Optimizer]:
  model = Transformer(cfg.model, rngs=nnx.Rngs(cfg.seed))
  return model, nnx.Optimizer(model, make_optimizer(cfg.train), wrt=nnx.Param)


def create_state(cfg: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh | None = None) -> tuple[nnx.GraphDef, nnx.State]:
  """(graphdef, state) of the model and optimizer: the pure form the jitted steps take.

  With a mesh, the state is initialised directly in its shards (one jit with out_shardings), so
  no device ever holds the whole model.
  """
  if mesh is None:
    return nnx.split(init_train_objects(cfg))
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: init_train_objects(cfg)))
  shardings = sharding.state_shardings(abstract, mesh, sharding.rules(cfg.mesh))
  state = jax.jit(lambda: nnx.split(init_train_objects(cfg))[1], out_shardings=shardings)()
  return graphdef, state


class MetricsLog:
  """WORKDIR/metrics.jsonl: one JSON row per logged step; rows past a resumed step are dropped."""

  def __init__(self, workdir: str, resume_step: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(self.path):
      with open(self.path) as f:
        rows = [r for r in (json.loads(line) for line in f if line.strip())
                if r["step"] <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)

  def write(self, row: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")


def _duration(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f"{m}m{s:02d}s" if m else f"{s}s"


def evaluate(eval_step, state, batches, mesh, axis_rules) -> float:
  """Validation bits per byte: every token is one byte (or a file-ending EOS)."""
  with sharding.activate(mesh, axis_rules):
    losses = [eval_step(state, b) for b in batches]
  return float(np.mean(jax.device_get(losses))) / LN2


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str,
                       on_step: Callable[[int], None] | None = None) -> dict:
  """Trains (or resumes) and returns the final summary; `on_step(step)` runs after each step."""
  spec = validate_config(cfg)
  t = cfg.train
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  corpus = data.load_corpus(cfg.data)
  chief = jax.process_index() == 0  # only process 0 prints and writes metrics
  say = (lambda *a, **k: print(*a, **k, flush=True)) if chief else (lambda *a, **k: None)
  say(corpus.describe())

  mesh = sharding.make_mesh(cfg.mesh)
  axis_rules = sharding.rules(cfg.mesh)
  hosts, host = jax.process_count(), jax.process_index()
  if t.batch_size % hosts:
    raise ValueError(f"config.train.batch_size={t.batch_size} must divide among {hosts} hosts")
  graphdef, state = create_state(cfg, mesh)
  batch_sh = sharding.batch_sharding(mesh, axis_rules)
  train_step, eval_step = make_steps(graphdef, jax.tree.map(lambda x: x.sharding, state),
                                     batch_sh, t)
  train_iter = iter(data.train_dataset(corpus.train, t.seq_len, t.batch_size // hosts,
                                       cfg.data.seed, host, hosts))
  val = [sharding.global_batch({k: v[host::hosts] for k, v in b.items()}, batch_sh)
         for b in data.val_batches(corpus.val, t.seq_len, t.batch_size, t.eval_batches)]
  ckpt = Checkpointer(workdir, t.keep_checkpoints)
  start = ckpt.latest_step() or 0
  if start:
    changed = check_compatible(workdir, start, ckpt.saved_config(start), cfg)
    state = ckpt.restore(start, state, train_iter)
    say(f"resumed from step {start} in {workdir}"
        + (f" (changed model fields: {'; '.join(changed)})" if changed else ""))
  log = MetricsLog(workdir, start) if chief else None
  model_tokens = spec.num_copies * t.seq_len
  say(f"model: {param_count(nnx.merge(graphdef, state)[0]) / 1e6:.2f}M params, variant "
      f"{spec.variant} K={spec.num_copies} W={spec.window} C={spec.chunk}, "
      f"{model_tokens} model tokens per sequence; mesh {dict(mesh.shape)} over {hosts} "
      f"host(s); training steps {start + 1}..{t.steps}")

  val_bpb = None
  pending, t_log, t0 = [], time.time(), time.time()
  try:
    for step in range(start + 1, t.steps + 1):
      with sharding.activate(mesh, axis_rules):  # traced under the mesh: activations pinned
        state, metrics = train_step(state, sharding.global_batch(next(train_iter), batch_sh))
      pending.append(metrics["loss"])
      if step % t.log_every == 0 or step == t.steps:
        loss = float(np.mean(jax.device_get(pending)))
        now = time.time()
        tok_s = len(pending) * t.batch_size * t.seq_len / (now - t_log)
        row = {"step": step, "loss": loss, "grad_norm": float(metrics["grad_norm"]),
               "tokens_per_s": tok_s}
        if t.z_loss:  # the loss's parts, last step's values
          row.update(ce=float(metrics["ce"]), z_loss=float(metrics["z_loss"]))
        if log:
          log.write(row)
        eta = (now - t0) / (step - start) * (t.steps - step)
        say(f"step {step:>6}/{t.steps} | loss {loss:.4f} | {tok_s / 1e3:6.1f}k tok/s | "
            f"{_duration(now - t0)} elapsed, eta {_duration(eta)}")
        pending, t_log = [], time.time()
      if step % t.eval_every == 0 or step == t.steps:
        val_bpb = evaluate(eval_step, state, val, mesh, axis_rules)
        if log:
          log.write({"step": step, "val_bits_per_byte": val_bpb})
        say(f"step {step:>6}/{t.steps} | validation {val_bpb:.4f} bits/byte")
      if step % t.checkpoint_every == 0 or step == t.steps:
        ckpt.save(step, state, train_iter, cfg)
      if on_step is not None:
        on_step(step)
  finally:  # an interrupted run still finishes writing its last checkpoint
    ckpt.wait()
    ckpt.close()

  if val_bpb is None:  # nothing left to train: report the restored model
    val_bpb = evaluate(eval_step, state, val, mesh, axis_rules)
  summary = {"step": t.steps, "val_bits_per_byte": val_bpb}
  if t.sample_tokens and hosts > 1:
    say("sample skipped on several hosts: run phd_jax.generate on the checkpoint")
  elif t.sample_tokens:
    model = nnx.merge(graphdef, state)[0]
    ids, n = generate(model, [data.encode(t.sample_prompt).tolist()], t.sample_tokens,
                      temperature=t.sample_temperature, seed=cfg.seed)
    summary["sample"] = t.sample_prompt + data.decode(ids[0, :n[0]])
    say("----- sample -----\n" + summary["sample"] + "\n------------------")
  say(f"done: steps={t.steps} val_bits_per_byte={val_bpb:.4f} workdir={workdir}")
  return summary


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  if not flags.FLAGS.workdir:
    sys.exit("error: --workdir is required")
  f = flags.FLAGS
  sharding.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id,
                                  auto=f.distributed)
  try:
    train_and_evaluate(f.config, f.workdir)
  except ValueError as e:  # config and checkpoint problems: one clear line, no traceback
    sys.exit(f"error: {e}")


if __name__ == "__main__":  # flags only when run as a program, so importing this module is free
  config_flags.DEFINE_config_file("config", "configs/quickstart.py",
                                  "Experiment config file (a get_config() module).")
  flags.DEFINE_string("workdir", None, "Run directory: checkpoints and metrics.jsonl.")
  flags.DEFINE_bool("distributed", False, "Multi-host: detect peers (TPU pods, SLURM, MPI).")
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
  flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's id.")
  app.run(main)
