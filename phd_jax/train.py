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
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from phd_jax import data
from phd_jax.checkpoint import Checkpointer, check_compatible
from phd_jax.config import validate_config
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


def loss_fn(model: Transformer, batch: dict) -> jax.Array:
  """Mean next-token cross-entropy (nats); the model already returns only last-copy logits."""
  logits = model(batch["inputs"])  # [B, L, vocab]
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()


def make_steps(graphdef: nnx.GraphDef):
  """Pure jitted train and eval steps over the split (model, optimizer) state."""

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state: nnx.State, batch: dict):
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  @jax.jit
  def eval_step(state: nnx.State, batch: dict) -> jax.Array:
    model, _ = nnx.merge(graphdef, state)
    return loss_fn(model, batch)

  return train_step, eval_step


def init_train_objects(cfg: ml_collections.ConfigDict) -> tuple[Transformer, nnx.Optimizer]:
  model = Transformer(cfg.model, rngs=nnx.Rngs(cfg.seed))
  return model, nnx.Optimizer(model, make_optimizer(cfg.train), wrt=nnx.Param)


def create_state(cfg: ml_collections.ConfigDict) -> tuple[nnx.GraphDef, nnx.State]:
  """(graphdef, state) of the model and optimizer: the pure form the jitted steps take."""
  return nnx.split(init_train_objects(cfg))


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


def evaluate(eval_step, state, batches) -> float:
  """Validation bits per byte: every token is one byte (or a file-ending EOS)."""
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
  print(corpus.describe(), flush=True)

  graphdef, state = create_state(cfg)
  train_step, eval_step = make_steps(graphdef)
  train_iter = iter(data.train_dataset(corpus.train, t.seq_len, t.batch_size, cfg.data.seed))
  val = data.val_batches(corpus.val, t.seq_len, t.batch_size, t.eval_batches)
  ckpt = Checkpointer(workdir, t.keep_checkpoints)
  start = ckpt.latest_step() or 0
  if start:
    changed = check_compatible(workdir, start, ckpt.saved_config(start), cfg)
    state = ckpt.restore(start, state, train_iter)
    print(f"resumed from step {start} in {workdir}"
          + (f" (changed model fields: {'; '.join(changed)})" if changed else ""), flush=True)
  log = MetricsLog(workdir, start)
  model_tokens = spec.num_copies * t.seq_len
  print(f"model: {param_count(nnx.merge(graphdef, state)[0]) / 1e6:.2f}M params, variant "
        f"{spec.variant} K={spec.num_copies} W={spec.window} C={spec.chunk}, "
        f"{model_tokens} model tokens per sequence; training steps {start + 1}..{t.steps}",
        flush=True)

  val_bpb = None
  pending, t_log, t0 = [], time.time(), time.time()
  try:
    for step in range(start + 1, t.steps + 1):
      state, metrics = train_step(state, next(train_iter))
      pending.append(metrics["loss"])
      if step % t.log_every == 0 or step == t.steps:
        loss = float(np.mean(jax.device_get(pending)))
        now = time.time()
        tok_s = len(pending) * t.batch_size * t.seq_len / (now - t_log)
        row = {"step": step, "loss": loss, "grad_norm": float(metrics["grad_norm"]),
               "tokens_per_s": tok_s}
        log.write(row)
        eta = (now - t0) / (step - start) * (t.steps - step)
        print(f"step {step:>6}/{t.steps} | loss {loss:.4f} | {tok_s / 1e3:6.1f}k tok/s | "
              f"{_duration(now - t0)} elapsed, eta {_duration(eta)}", flush=True)
        pending, t_log = [], time.time()
      if step % t.eval_every == 0 or step == t.steps:
        val_bpb = evaluate(eval_step, state, val)
        log.write({"step": step, "val_bits_per_byte": val_bpb})
        print(f"step {step:>6}/{t.steps} | validation {val_bpb:.4f} bits/byte", flush=True)
      if step % t.checkpoint_every == 0 or step == t.steps:
        ckpt.save(step, state, train_iter, cfg)
      if on_step is not None:
        on_step(step)
  finally:  # an interrupted run still finishes writing its last checkpoint
    ckpt.wait()
    ckpt.close()

  if val_bpb is None:  # nothing left to train: report the restored model
    val_bpb = evaluate(eval_step, state, val)
  summary = {"step": t.steps, "val_bits_per_byte": val_bpb}
  if t.sample_tokens:
    model = nnx.merge(graphdef, state)[0]
    ids, n = generate(model, [data.encode(t.sample_prompt).tolist()], t.sample_tokens,
                      temperature=t.sample_temperature, seed=cfg.seed)
    summary["sample"] = t.sample_prompt + data.decode(ids[0, :n[0]])
    print("----- sample -----\n" + summary["sample"] + "\n------------------", flush=True)
  print(f"done: steps={t.steps} val_bits_per_byte={val_bpb:.4f} workdir={workdir}", flush=True)
  return summary


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  if not flags.FLAGS.workdir:
    sys.exit("error: --workdir is required")
  try:
    train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  except ValueError as e:  # config and checkpoint problems: one clear line, no traceback
    sys.exit(f"error: {e}")


if __name__ == "__main__":  # flags only when run as a program, so importing this module is free
  config_flags.DEFINE_config_file("config", "configs/quickstart.py",
                                  "Experiment config file (a get_config() module).")
  flags.DEFINE_string("workdir", None, "Run directory: checkpoints and metrics.jsonl.")
  app.run(main)
