"""The training loop: steps, with the periodic actions (phd_jax/train/hooks.py) around them.

`phd-train --config=configs/quickstart.py --workdir=runs/demo` runs it; running the same command
again resumes from the latest checkpoint in the workdir.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from phd_jax.inference.decode import generate
from phd_jax.model import sharding
from phd_jax.train import goodput
from phd_jax.train.guard import DivergenceGuard
from phd_jax.train.hooks import ValidationHook, default_hooks
from phd_jax.train.preemption import Preemption
from phd_jax.train.setup import TrainSession, start_session


def train_and_evaluate(cfg: ml_collections.ConfigDict | None, workdir: str,
                       on_step: Callable[[int], None] | None = None,
                       started: float | None = None) -> dict:
  """Trains (or resumes) and returns the final summary; `on_step(step)` runs after each step.
  `cfg` None: the config saved in the workdir. `started`: when this process's time accounting
  begins (phd-train: the process's start, goodput.process_start(); None: now)."""
  clock = goodput.Clock(started)  # where this process's time goes, part by part
  session = start_session(cfg, workdir, clock)  # every check that can fail, before compiling
  clock.open(session.workdir, session.start, session.chief, session.say,
             session.cfg.train.log_every)  # reads which steps the earlier processes did
  hooks = default_hooks(session, on_step)
  guard = DivergenceGuard(session.ckpt)  # no non-finite state is ever checkpointed
  state, preempted, summary = session.state, None, {}
  try:
    with Preemption() as preemption:
      for step in range(session.start + 1, session.cfg.train.steps + 1):
        clock.step(step, state)  # productive, or lost: a step an earlier process had done
        for hook in hooks:
          with clock.part(hook.part):
            hook.before(step, state)
        with (sharding.activate(session.mesh, session.axis_rules),  # traced under the mesh
              jax.profiler.StepTraceAnnotation("train", step_num=step)):  # a step in XProf
          state, metrics = session.train_step(state, session.next_batch())
        clock.done(step)  # recorded before anything (a kill) can end the process
        stop = preemption.requested(step)  # the same answer on every host
        guard.check(step, metrics, now=any(hook.due(step, stop) for hook in hooks))
        for hook in hooks:
          with clock.part(hook.part):
            hook.after(step, state, metrics, stop)
        if stop:
          preempted = step
          break
    clock.finish()  # the rest is the run's summary, its sample and the last saves
    if not preempted:  # before the hooks close: the log (and its W&B mirror) takes the summary
      summary = summarize(session, state, next(h for h in hooks if isinstance(h, ValidationHook)))
      for hook in hooks:
        hook.end(summary)
  finally:  # an interrupted run still finishes writing its last checkpoint
    for hook in hooks:
      with clock.part(hook.part):
        hook.close(state)
  clock.close("preempted" if preempted else "finished")  # the table of where the time went
  if preempted:
    session.say(f"preempted by {preemption.describe()}: saved a checkpoint at step {preempted} "
                f"in {session.ckpt.directory}; run the same command again to resume")
    return {"step": preempted, "preempted": True}
  session.say(f"done: steps={summary['step']} val_bits_per_byte="
              f"{summary['val_bits_per_byte']:.4f} workdir={session.workdir}")
  return summary


def summarize(session: TrainSession, state: nnx.State, validation: ValidationHook) -> dict:
  """The final validation metrics and, with config.train.sample_tokens, a sample."""
  t = session.cfg.train
  val = validation.last or validation.validate(state)  # nothing trained: the restored model
  summary = {"step": t.steps, **val}
  if t.sample_tokens and jax.process_count() > 1:
    session.say("sample skipped on several hosts: run phd-generate on the checkpoint")
  elif t.sample_tokens:
    model, tok = nnx.merge(session.graphdef, state)[0], session.tokenizer
    ids, n = generate(model, [tok.encode(t.sample_prompt)], t.sample_tokens,
                      temperature=t.sample_temperature, seed=session.cfg.seed,
                      eos_id=tok.eos_id)
    summary["sample"] = t.sample_prompt + tok.decode(ids[0, :n[0]])
    session.say("----- sample -----\n" + summary["sample"] + "\n------------------")
  return summary
