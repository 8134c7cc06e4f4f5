"""Bits per byte of the gold continuation: a multiple-choice score that still ranks small models.

At our model sizes acc sits at chance, so it cannot tell PHD variants apart; OLMo's in-loop
evaluations report, for this reason, how well the model predicts the right answer:

  bpb = -(sum of log p of the gold continuation's tokens) / ln 2 / (UTF-8 bytes of it)

where the continuation is the string scored, with its leading delimiter (lm-eval's
`target_delimiter`, usually " "). Bytes, not tokens, so it compares across tokenizers. A task's
bpb is the mean over documents; a group's (mmlu) weights its tasks by their sizes, like its acc.

`add_bpb` adds it to lm-eval's built tasks and groups, beside acc and acc_norm, without
touching how lm-eval computes those: "bpb,none" in the results JSON.
"""
from __future__ import annotations

import math

LN2 = math.log(2.0)


def gold_bpb(task, doc: dict, lls: list[float]) -> float | None:
  """bpb of `doc`'s gold continuation from the per-request log-likelihoods (lm-eval's order);
  None when the document's gold label is not among its choices."""
  choices = task.doc_to_choice(doc)
  delimiter = task.config.target_delimiter
  if task.multiple_input:  # winogrande: choices are contexts, one shared continuation
    gold, continuation = task.doc_to_text(doc), task.doc_to_target(doc)
  else:
    gold = task.doc_to_target(doc)
    if isinstance(gold, str):
      gold = choices.index(gold) if gold in choices else -1
  if isinstance(gold, list):  # several right answers: the first
    gold = gold[0]
  if not isinstance(gold, int) or not 0 <= gold < len(choices):
    return None
  if not task.multiple_input:
    continuation = choices[gold]
  n_bytes = len(f"{delimiter}{continuation}".encode())
  return -lls[gold] / LN2 / max(n_bytes, 1)


def _with_bpb(task, process_results):
  def process(doc: dict, results) -> dict:
    out = process_results(doc, results)
    lls = [ll for ll, _ in results]
    value = gold_bpb(task, doc, lls)
    if value is not None:
      out["bpb"] = value
    return out
  return process


def add_bpb(loaded: dict) -> None:
  """Adds bpb to every multiple-choice task of TaskManager.load's output, and to the groups'
  aggregates (size-weighted)."""
  from lm_eval.api.metrics import mean
  from lm_eval.config.group import AggMetricConfig
  for task in loaded["tasks"].values():
    if task.OUTPUT_TYPE != "multiple_choice" or "bpb" in task.aggregation():
      continue
    task.process_results = _with_bpb(task, task.process_results)
    task.aggregation()["bpb"] = mean
    task.higher_is_better()["bpb"] = False
  for group in loaded["groups"].values():
    metrics = group.aggregate_metric_list
    if metrics and not any(m.metric == "bpb" for m in metrics):
      metrics.append(AggMetricConfig(metric="bpb", weight_by_size=True))
