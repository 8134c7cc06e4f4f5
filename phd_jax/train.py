"""Pretraining: `python -m phd_jax.train --config=configs/quickstart.py --workdir=runs/demo`.

Running the same command again resumes from the latest checkpoint in the workdir.
"""
from __future__ import annotations

import functools
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

from phd_jax import data, eval_hook, sharding, tokenizers, validation
from phd_jax.checkpoint import Checkpointer, check_compatible, saved_run_config
from phd_jax.config import validate_config
from phd_jax.flops import Throughput
from phd_jax.grad_accum import loss_and_grads
from phd_jax.guard import DivergenceError, DivergenceGuard
from phd_jax.losses import lm_loss
from phd_jax.metrics import MetricsLog
from phd_jax.preemption import Preemption
from phd_jax.profiler import Profiler
from phd_jax.workdir import prepare_workdir
from phd_jax.model import Transformer, param_count
from phd_jax.decode import generate


def lr_schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup then cosine decay; update number s (from 0) uses lr_schedule(t)(s)."""
  return optax.warmup_cosine_decay_schedule(
      0.0, t.learning_rate, t.warmup_steps, max(t.steps, t.warmup_steps + 1),
      end_value=t.learning_rate * t.end_lr_fraction)


def make_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW, linear warmup then cosine decay, global-norm clipping; no decay on vectors (norms)."""
  schedule = lr_schedule(t)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(t.grad_clip),
      optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay, mask=decay_mask))


# (model, batch, train config) -> (loss, aux scalars): chunked last-copy cross-entropy plus the
# optional z-loss, defined in losses.py.
loss_fn = lm_loss


def make_train_step(graphdef: nnx.GraphDef, t: ml_collections.ConfigDict, state_sharding=None,
                    batch_sharding=None):
  """The pure jitted train step over the split (model, optimizer) state.

  With shardings, the step is compiled for them (state and batch laid out on the mesh). Its
  metrics are the loss, the gradient norm and the loss's aux scalars (ce, z_loss).
  """

  @functools.partial(jax.jit, donate_argnums=0, in_shardings=(state_sharding, batch_sharding),
                     out_shardings=(state_sharding, None))
  def train_step(state: nnx.State, batch: dict):
    model, optimizer = nnx.merge(graphdef, state)
    loss, aux, grads = loss_and_grads(loss_fn, model, batch, t)  # microbatched if configured
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), {"loss": loss, "grad_norm": optax.tree.norm(grads),
                                           **aux}

  return train_step


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


def _duration(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f"{m}m{s:02d}s" if m else f"{s}s"


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str,
                       on_step: Callable[[int], None] | None = None) -> dict:
  """Trains (or resumes) and returns the final summary; `on_step(step)` runs after each step."""
  spec = validate_config(cfg)
  t = cfg.train
  workdir = prepare_workdir(workdir)  # a file, unwritable, foreign checkpoints: clear errors
  tok = tokenizers.from_config(cfg.data)
  splits = data.load_splits(cfg.data, tok, cfg.model.vocab_size, t.seq_len)
  chief = jax.process_index() == 0  # only process 0 prints and writes metrics
  say = (lambda *a, **k: print(*a, **k, flush=True)) if chief else (lambda *a, **k: None)
  say(splits.description)
  if chief:
    tokenizers.save_to_run(tok, workdir)  # generate and evaluate load the run's own copy

  mesh = sharding.make_mesh(cfg.mesh)
  axis_rules = sharding.rules(cfg.mesh)
  hosts, host = jax.process_count(), jax.process_index()
  if t.batch_size % hosts:
    raise ValueError(f"config.train.batch_size={t.batch_size} must divide among {hosts} hosts")
  graphdef, state = create_state(cfg, mesh)
  batch_sh = sharding.batch_sharding(mesh, axis_rules)
  state_sh = jax.tree.map(lambda x: x.sharding, state)
  train_step = make_train_step(graphdef, t, state_sh, batch_sh)
  train_iter = iter(data.train_dataset(splits.train, t.seq_len, t.batch_size // hosts,
                                       cfg.data.seed, host, hosts))
  val = [sharding.global_batch({k: v[host::hosts] for k, v in b.items()}, batch_sh)
         for b in data.val_batches(splits.val, t.seq_len, t.batch_size, t.eval_batches)]
  validate = validation.Validator(graphdef, tok.token_bytes(), val, mesh, axis_rules, state_sh,
                                  batch_sh, t.loss_chunk)
  ckpt = Checkpointer(workdir, t.keep_checkpoints)
  latest = ckpt.latest_step()  # 0 for a run imported by phd_jax.hf: resumed all the same
  start = latest or 0
  if latest is not None:
    changed = check_compatible(workdir, start, ckpt.saved_config(start), cfg)
    state = ckpt.restore(start, state, train_iter)
    say(f"resumed from step {start} in {workdir}"
        + (f" (changed model fields: {'; '.join(changed)})" if changed else ""))
  log = MetricsLog(workdir, start) if chief else None
  downstream = eval_hook.InTrainingEval(cfg, workdir, say)  # cfg.eval.tasks; none: a no-op
  model_tokens = spec.num_copies * t.seq_len
  say(f"model: {param_count(nnx.merge(graphdef, state)[0]) / 1e6:.2f}M params, variant "
      f"{spec.variant} K={spec.num_copies} W={spec.window} C={spec.chunk}, "
      f"{model_tokens} model tokens per sequence; mesh {dict(mesh.shape)} over {hosts} "
      f"host(s); training steps {start + 1}..{t.steps}")

  guard = DivergenceGuard(ckpt)  # no non-finite state is ever checkpointed
  profiler = Profiler(workdir, tuple(t.profile_steps))
  throughput, schedule = Throughput(cfg, jax.devices()), lr_schedule(t)

  val_metrics, preempted = None, None
  pending, t_log, t0 = [], time.time(), time.time()
  try:
    with Preemption() as preemption:
      for step in range(start + 1, t.steps + 1):
        profiler.step(step, state)
        with sharding.activate(mesh, axis_rules):  # traced under the mesh: activations pinned
          state, metrics = train_step(state, sharding.global_batch(next(train_iter), batch_sh))
        pending.append(metrics)
        stop = preemption.requested(step)  # the same answer on every host
        due = lambda every: step % every == 0 or step == t.steps or stop  # noqa: E731
        guard.check(step, metrics, now=due(t.log_every) or due(t.eval_every)
                    or due(t.checkpoint_every))
        if due(t.log_every):
          got, now = jax.device_get(pending), time.time()
          tok_s = len(got) * t.batch_size * t.seq_len / (now - t_log)
          mean = {k: float(np.mean([m[k] for m in got])) for k in got[-1] if k != "grad_norm"}
          row = {"step": step, "loss": mean.pop("loss"), **mean,  # loss and the aux scalars
                 "grad_norm": float(got[-1]["grad_norm"]),
                 "learning_rate": float(schedule(step - 1)), "tokens_per_s": tok_s,
                 **throughput(len(got) / (now - t_log))}
          if log:
            log.write(row)
          eta = (now - t0) / (step - start) * (t.steps - step)
          mfu = f" | MFU {row['mfu']:.1%}" if "mfu" in row else ""
          say(f"step {step:>6}/{t.steps} | loss {row['loss']:.4f} | {tok_s / 1e3:6.1f}k tok/s | "
              f"{row['tflops_per_s']:.3g} TFLOP/s{mfu} | {_duration(now - t0)} elapsed, "
              f"eta {_duration(eta)}")
          pending, t_log = [], time.time()
        if due(t.eval_every) and not stop:
          val_metrics = validate(state)
          if log:
            log.write({"step": step, **val_metrics})
          say(f"step {step:>6}/{t.steps} | validation {val_metrics['val_bits_per_byte']:.4f} "
              f"bits/byte, {val_metrics['val_loss']:.4f} nats/token")
        if not stop:
          downstream.run(step, graphdef, state, log)
        if due(t.checkpoint_every):
          ckpt.save(step, state, train_iter, cfg)
        if on_step is not None:
          on_step(step)
        if stop:
          preempted = step
          break
  finally:  # an interrupted run still finishes writing its last checkpoint
    profiler.close(state)
    ckpt.wait()
    ckpt.close()
    if log:
      log.close()

  if preempted:
    say(f"preempted by {preemption.describe()}: saved a checkpoint at step {preempted} in "
        f"{ckpt.directory}; run the same command again to resume")
    return {"step": preempted, "preempted": True}
  if val_metrics is None:  # nothing left to train: report the restored model
    val_metrics = validate(state)
  summary = {"step": t.steps, **val_metrics}
  val_bpb = val_metrics["val_bits_per_byte"]
  if t.sample_tokens and hosts > 1:
    say("sample skipped on several hosts: run phd_jax.generate on the checkpoint")
  elif t.sample_tokens:
    model = nnx.merge(graphdef, state)[0]
    ids, n = generate(model, [tok.encode(t.sample_prompt)], t.sample_tokens,
                      temperature=t.sample_temperature, seed=cfg.seed, eos_id=tok.eos_id)
    summary["sample"] = t.sample_prompt + tok.decode(ids[0, :n[0]])
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
  try:  # no --config: resume with the workdir's saved one (e.g. after `phd_jax.hf import`)
    cfg = f.config if f.config is not None else saved_run_config(f.workdir)
    train_and_evaluate(cfg, f.workdir)
  except (ValueError, DivergenceError) as e:  # config, workdir, checkpoint problems and
    # divergence: one clear line, no traceback
    sys.exit(f"error: {e}")


if __name__ == "__main__":  # flags only when run as a program, so importing this module is free
  config_flags.DEFINE_config_file("config", None, "Experiment config file (a get_config() "
                                  "module); default: the workdir's saved config, else "
                                  "configs/quickstart.py.")
  flags.DEFINE_string("workdir", None, "Run directory: checkpoints and metrics.jsonl.")
  flags.DEFINE_bool("distributed", False, "Multi-host: detect peers (TPU pods, SLURM, MPI).")
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
  flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's id.")
  app.run(main)
