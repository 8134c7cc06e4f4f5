"""Downstream evals inside the training loop (OLMo-style): lm-eval tasks on the live parameters.

`cfg.eval.tasks` names the tasks and `cfg.eval.every` the interval; results go to metrics.jsonl as
{"step": s, "eval/<task>/<metric>": value}. The adapter is phd_jax.evaluate's, so numbers logged
here equal what `python -m phd_jax.evaluate` reports for the checkpoint of the same step.
"""
from __future__ import annotations

import logging
from typing import Callable

import ml_collections
from flax import nnx

from phd_jax import tokenizers


def flatten_results(results: dict) -> dict[str, float]:
  """lm-eval's {"results": {task: {"acc,none": x, "acc_stderr,none": ..}}} -> {"eval/task/acc": x}.

  Standard errors and non-numeric fields are left out; a filter other than "none" is kept in the
  name (eval/task/exact_match/strict-match).
  """
  row = {}
  for task, metrics in results["results"].items():
    for key, value in metrics.items():
      metric, _, filt = key.partition(",")
      if not filt or "_stderr" in metric or not isinstance(value, (int, float)):
        continue
      row[f"eval/{task}/{metric}" + ("" if filt == "none" else f"/{filt}")] = float(value)
  return row


class InTrainingEval:
  """Built once before the loop (tasks resolved, so a bad name fails before training starts);
  `run` is the loop's one call per step."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str,
               say: Callable[..., None] = print):
    from phd_jax.evaluate import expand_tasks  # local: lm-eval is only imported when used
    self.cfg, self.say = cfg, say
    self.tasks = expand_tasks(cfg.eval.tasks)
    self.manager = None
    if self.tasks:
      from phd_jax.evaluate import resolve_tasks
      try:
        self.manager = resolve_tasks(self.tasks, cfg.eval.include_path or None)
      except ValueError as e:
        raise ValueError(f"config.eval.tasks={cfg.eval.tasks!r} is invalid: {e}") from None
      self.tokenizer = tokenizers.for_run(workdir, cfg)

  def due(self, step: int) -> bool:
    return bool(self.tasks) and (step % self.cfg.eval.every == 0 or step == self.cfg.train.steps)

  def run(self, step: int, graphdef: nnx.GraphDef, state: nnx.State, log=None) -> dict | None:
    """Evaluates the model in `state` (a (model, optimizer) state) when due; returns the row."""
    if not self.due(step):
      return None
    from phd_jax.evaluate import PHDLM, run_tasks
    e = self.cfg.eval
    lm = PHDLM(nnx.merge(graphdef, state)[0], self.tokenizer, self.cfg.train.seq_len,
               e.batch_size)
    lm_logger = logging.getLogger("lm_eval")
    level = lm_logger.level
    lm_logger.setLevel(logging.ERROR)  # its per-task INFO/WARNING lines would drown the progress
    try:
      results = run_tasks(lm, self.tasks, self.manager, limit=e.limit or None,
                          num_fewshot=None if e.num_fewshot < 0 else e.num_fewshot)
    finally:
      lm_logger.setLevel(level)
    row = {"step": step, **flatten_results(results)}
    if log is not None:
      log.write(row)
    shown = ", ".join(f"{k[5:]} {v:.4f}" for k, v in row.items()
                      if k != "step" and k.rsplit("/", 1)[-1] in ("acc", "acc_norm"))
    shown = shown or ", ".join(f"{k[5:]} {v:.4f}" for k, v in row.items() if k != "step")
    self.say(f"step {step:>6}/{self.cfg.train.steps} | eval {shown}")
    return row
