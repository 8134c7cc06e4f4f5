"""The training loop's periodic actions, each a hook with an `every`: logging, validation,
in-training lm-eval evals, checkpoints, profiling.

A hook runs after every `every`-th step and after the last one. At a preemption stop, those
whose work must not be lost (the log, the checkpoint) run too, and the slow ones (validation,
evals) are skipped. The loop calls `before` ahead of each step and `after` behind it, for every
hook, in order; a new periodic action is a new hook, not a new branch in the loop. Each hook's
`part` names where its time goes in the run's goodput accounting (phd_jax/train/goodput.py).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from flax import nnx

from phd_jax.checkpoints import tiers
from phd_jax.checkpoints.checkpoint import Checkpointer
from phd_jax.data.tokenizers import Tokenizer
from phd_jax.eval import results as eval_results
from phd_jax.eval import tasks as eval_tasks
from phd_jax.model.flops import Throughput
from phd_jax.train import source_validation, wandb_log
from phd_jax.train.goodput import Clock
from phd_jax.train.metrics import MetricsLog
from phd_jax.train.profiler import Profiler
from phd_jax.train.setup import TrainSession
from phd_jax.train.state import lr_schedule
from phd_jax.train.validation import Validator


class Hook:
  every: int = 1
  at_stop: bool = True  # also runs at a preemption stop
  last_step: int = 0  # the run's final step: every hook runs there
  part: str = "other"  # its calls' time in goodput.PARTS

  def due(self, step: int, stop: bool = False) -> bool:
    if stop:
      return self.at_stop
    return step % self.every == 0 or step == self.last_step

  def before(self, step: int, state: nnx.State) -> None:
    """Ahead of the train step `step`."""

  def after(self, step: int, state: nnx.State, metrics: dict, stop: bool) -> None:
    """Behind each train step: runs the action when due."""
    if self.due(step, stop):
      self.act(step, state)

  def act(self, step: int, state: nnx.State) -> None:
    pass

  def end(self, summary: dict) -> None:
    """The run's final summary (loop.summarize), when it reached its last step; before close."""

  def close(self, state: nnx.State) -> None:
    """At the end of the loop, however it ended."""


def _duration(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f"{m}m{s:02d}s" if m else f"{s}s"


Say = Callable[..., None]


class LogHook(Hook):
  """Mean training metrics since the last log row: metrics.jsonl, TensorBoard, the console;
  with a goodput clock, the run's time per part (time/...)."""

  part = "log"

  def __init__(self, cfg: ml_collections.ConfigDict, start: int, log: MetricsLog | None,
               say: Say = print, data=None, clock: Clock | None = None):
    t = cfg.train
    self.data, self.logged = data, start  # the batches' iterator: tokens, epochs per source
    self.clock = clock
    self.every, self.last_step, self.t, self.start, self.log, self.say = (
        t.log_every, t.steps, t, start, log, say)
    # jitted: the schedule is a dozen jnp ops, which eagerly compile one by one
    self.throughput, self.schedule = Throughput(cfg, jax.devices()), jax.jit(lr_schedule(t))
    self.pending: list[dict] = []
    self.t0 = self.t_log = time.time()

  def after(self, step: int, state: nnx.State, metrics: dict, stop: bool) -> None:
    self.pending.append(metrics)  # on the device until the row is due
    super().after(step, state, metrics, stop)

  def act(self, step: int, state: nnx.State) -> None:
    t = self.t
    got, now = jax.device_get(self.pending), time.time()
    tok_s = len(got) * t.batch_size * t.seq_len / (now - self.t_log)
    mean = {k: float(np.mean([m[k] for m in got])) for k in got[-1] if k != "grad_norm"}
    row = {"step": step, "loss": mean.pop("loss"), **mean,  # loss and the aux scalars
           "grad_norm": float(got[-1]["grad_norm"]),
           "learning_rate": float(self.schedule(step - 1)), "tokens_per_s": tok_s,
           **self.throughput(len(got) / (now - self.t_log)),
           **(self.data.usage(step) if self.data else {}),
           **(self.clock.fields() if self.clock else {})}
    if self.log:  # a checkpoint (either tier) before the next row: the row must be in the
      # bucket first
      saves = [n for n in (t.checkpoint_every, t.local_checkpoint_every) if n]
      self.log.write(row, sync=any(step // n != (step + self.every) // n for n in saves)
                     or step >= t.steps)
    eta = (now - self.t0) / (step - self.start) * (t.steps - step)
    mfu = f" | MFU {row['mfu']:.1%}" if "mfu" in row else ""
    self.say(f"step {step:>6}/{t.steps} | loss {row['loss']:.4f} | {tok_s / 1e3:6.1f}k tok/s | "
             f"{row['tflops_per_s']:.3g} TFLOP/s{mfu} | {_duration(now - self.t0)} elapsed, "
             f"eta {_duration(eta)}")
    for line in self.data.epoch_starts(self.logged, step) if self.data else ():
      self.say(line)
    self.pending, self.t_log, self.logged = [], time.time(), step

  def end(self, summary: dict) -> None:
    if self.log:
      self.log.summarize(summary)

  def close(self, state: nnx.State) -> None:
    if self.log:
      self.log.close()


class ValidationHook(Hook):
  """Validation loss and bits/byte on fixed held-out batches (config.train.val_every)."""

  at_stop, part = False, "validation"

  def __init__(self, validate: Validator, t: ml_collections.ConfigDict, log: MetricsLog | None,
               say: Say = print):
    self.validate, self.every, self.last_step, self.log, self.say = (
        validate, t.val_every, t.steps, log, say)
    self.last: dict | None = None  # the latest measurement, for the run's summary

  def act(self, step: int, state: nnx.State) -> None:
    self.last = self.validate(state)
    if self.log:
      self.log.write({"step": step, **self.last}, sync=True)
    self.say(f"step {step:>6}/{self.last_step} | validation "
             f"{self.last['val_bits_per_byte']:.4f} bits/byte, {self.last['val_loss']:.4f} "
             f"nats/token{source_validation.describe(self.last)}")


class LmEvalHook(Hook):
  """Downstream lm-eval tasks on the live parameters (config.eval; OLMo-style in-loop evals),
  logged as eval/<task>/<metric>: the numbers `phd-evaluate` reports for a checkpoint of the
  same step. `tasks` and their `manager` are resolved at the run's start
  (eval.tasks.config_tasks), so a bad name fails before anything is built."""

  at_stop, part = False, "eval"

  def __init__(self, cfg: ml_collections.ConfigDict, graphdef: nnx.GraphDef | None,
               tokenizer: Tokenizer | None, tasks: list[str], manager,
               log: MetricsLog | None = None, say: Say = print):
    self.every, self.last_step, self.cfg, self.log, self.say = (
        cfg.eval.every, cfg.train.steps, cfg, log, say)
    self.graphdef, self.tokenizer = graphdef, tokenizer
    self.tasks, self.manager = tasks, manager

  def due(self, step: int, stop: bool = False) -> bool:
    return bool(self.tasks) and super().due(step, stop)

  def act(self, step: int, state: nnx.State) -> None:
    from phd_jax.eval.harness import PHDLM  # local: lm-eval's model stack, only when evaluating
    e = self.cfg.eval
    lm = PHDLM(nnx.merge(self.graphdef, state)[0], self.tokenizer, self.cfg.train.seq_len,
               e.batch_size)
    lm.progress = False  # the training log's own line reports the evaluation
    lm_logger = logging.getLogger("lm_eval")
    level = lm_logger.level
    lm_logger.setLevel(logging.ERROR)  # its per-task INFO/WARNING lines would drown the progress
    try:
      results = eval_tasks.run_tasks(lm, self.tasks, self.manager, limit=e.limit or None,
                                     num_fewshot=None if e.num_fewshot < 0 else e.num_fewshot)
    finally:
      lm_logger.setLevel(level)
    row = {"step": step, **eval_results.flatten_results(results, only=self.tasks)}
    if self.log:
      self.log.write(row, sync=True)  # rare and slow to make: in a bucket at once
    shown = ", ".join(f"{k[5:]} {v:.4f}" for k, v in row.items()
                      if k != "step" and k.rsplit("/", 1)[-1] in ("acc", "acc_norm", "bpb"))
    shown = shown or ", ".join(f"{k[5:]} {v:.4f}" for k, v in row.items() if k != "step")
    self.say(f"step {step:>6}/{self.last_step} | eval {shown}")


class CheckpointHook(Hook):
  """State, data position and config, every config.train.checkpoint_every steps and at a stop."""

  part = "checkpoint"

  def __init__(self, ckpt: Checkpointer, cfg: ml_collections.ConfigDict, data_iter):
    self.ckpt, self.cfg, self.data_iter = ckpt, cfg, data_iter
    self.every, self.last_step = cfg.train.checkpoint_every, cfg.train.steps

  def act(self, step: int, state: nnx.State) -> None:
    self.ckpt.save(step, state, self.data_iter, self.cfg)

  def close(self, state: nnx.State) -> None:  # an interrupted run still finishes its last save
    self.ckpt.wait()
    self.ckpt.close()


class LocalCheckpointHook(CheckpointHook):
  """The node-local tier (checkpoints/tiers.py): every config.train.local_checkpoint_every
  steps, where the workdir's tier does not save; not at a stop (the workdir's tier saves)."""

  at_stop = False

  def __init__(self, ckpt: Checkpointer, cfg: ml_collections.ConfigDict, data_iter):
    super().__init__(ckpt, cfg, data_iter)
    self.every = cfg.train.local_checkpoint_every

  def due(self, step: int, stop: bool = False) -> bool:
    return tiers.local_due(self.cfg.train, step, stop)


class ProfileHook(Hook):
  """A jax.profiler trace of config.train.profile_steps into WORKDIR/profile."""

  part = "profile"

  def __init__(self, workdir: str, steps: tuple[int, int]):
    self.profiler = Profiler(workdir, tuple(steps))

  def due(self, step: int, stop: bool = False) -> bool:
    return False

  def before(self, step: int, state: nnx.State) -> None:
    self.profiler.step(step, state)

  def close(self, state: nnx.State) -> None:
    self.profiler.close(state)


class CallbackHook(Hook):
  """`fn(step)` after every step (tests and notebooks watch or interrupt a run with it)."""

  def __init__(self, fn: Callable[[int], None]):
    self.fn = fn

  def due(self, step: int, stop: bool = False) -> bool:
    return False  # nothing periodic: the divergence check need not wait for it

  def after(self, step: int, state: nnx.State, metrics: dict, stop: bool) -> None:
    self.fn(step)


def default_hooks(s: TrainSession, on_step: Callable[[int], None] | None = None) -> list[Hook]:
  """The periodic actions of a training session, in the order they act after each step."""
  cfg, t, say = s.cfg, s.cfg.train, s.say
  wandb = wandb_log.start(cfg, s.workdir) if s.chief else None  # config.log.wandb; None: off
  log = MetricsLog(s.workdir, s.start, s.metrics_rows, wandb) if s.chief else None  # process 0
  validate = source_validation.for_session(s)  # each data source's split, and their mean
  hooks = [ProfileHook(s.workdir, t.profile_steps),
           LogHook(cfg, s.start, log, say, s.train_iter, s.clock),
           ValidationHook(validate, t, log, say),
           LmEvalHook(cfg, s.graphdef, s.tokenizer, *s.eval_tasks, log, say),
           CheckpointHook(s.ckpt, cfg, s.train_iter)]
  hooks += [LocalCheckpointHook(s.local, cfg, s.train_iter)] if s.local else []
  return hooks + ([CallbackHook(on_step)] if on_step else [])
