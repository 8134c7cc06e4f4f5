"""lm-evaluation-harness's model interface over a phd_jax model (what `phd-evaluate` scores).

`PHDLM` is an `lm_eval.api.model.LM` over a model and its tokenizer, so any harness task (the
paper's seven benchmarks, or a local YAML task) scores a run exactly as it scores any other model.
The same adapter runs on the live parameters during training (phd_jax/train/hooks.py).
"""
from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from lm_eval.api.model import LM
from lm_eval.models.utils import Collator
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from phd_jax.checkpoints.load import load_run
from phd_jax.data.tokenizers import Tokenizer, for_run
from phd_jax.inference import decode
from phd_jax.model.transformer import Transformer

MIN_BUCKET = 16  # shortest padded length: scoring compiles once per power of two up to seq_len
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default for generate_until


@functools.lru_cache(maxsize=8)
def _score_fn(graphdef: nnx.GraphDef):
  """Compiled (state, inputs [B, L], targets [B, L]) -> (log p(target) [B, L], greedy [B, L]).

  Cached per graphdef, so evaluating the live parameters every N training steps compiles once
  per padded shape, not once per evaluation.
  """

  @jax.jit
  def score(state, inputs, targets):
    logits = nnx.merge(graphdef, state)(inputs)  # [B, L, V] fp32, last copy of each position
    logp = jax.nn.log_softmax(logits, axis=-1)
    target_logp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return target_logp, jnp.argmax(logits, axis=-1) == targets

  return score


def bucket(n: int, seq_len: int) -> int:
  """Padded length of an n-token input: the next power of two (>= MIN_BUCKET), at most seq_len."""
  return min(seq_len, max(MIN_BUCKET, 1 << math.ceil(math.log2(max(n, 1)))))


class PHDLM(LM):
  """lm-eval's model interface over a phd_jax Transformer, its tokenizer and its seq_len.

  Inputs are right-padded: every variant's attention is causal in positions (a hidden copy reads
  only earlier or same-position tokens), so padding after a sequence cannot change its logits.
  """

  def __init__(self, model: Transformer, tokenizer: Tokenizer, seq_len: int, batch_size: int = 8):
    super().__init__()
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size} must be >= 1")
    self.model, self.tokenizer = model, tokenizer
    self.max_length, self.batch_size = int(seq_len), int(batch_size)
    self._graphdef, self._state = nnx.split(model)
    self.workdir, self.step, self.config = None, None, None  # set by from_run
    self.progress = True  # a progress bar on stderr while scoring (off for in-training evals)
    self.requests: Counter[str] = Counter()  # per task: requests scored
    self.cuts: dict[str, list[int]] = defaultdict(list)  # per task: tokens cut from the left

  @classmethod
  def from_run(cls, workdir: str, batch_size: int = 8, *, probed: bool = False) -> PHDLM:
    """The newest checkpoint of a run that loads (its step in `.step`; a newer one that does
    not load is named on stderr), with its own tokenizer and training seq_len. `probed`: the
    caller has checked the workdir's bucket already."""
    model, cfg, step = load_run(workdir, probed=probed)
    lm = cls(model, for_run(workdir, cfg), cfg.train.seq_len, batch_size)
    lm.workdir, lm.step, lm.config = workdir, step, cfg
    return lm

  def _count(self, task: str | None, cut: int) -> None:
    """Notes one request of `task` and how many of its context tokens the window dropped."""
    task = task or "(no task)"
    self.requests[task] += 1
    if cut > 0:
      self.cuts[task].append(cut)

  def cut_report(self) -> dict[str, dict]:
    """Per task: requests scored, how many lost context tokens to seq_len, the longest cut."""
    return {t: {"requests": n, "cut_from_left": len(self.cuts[t]),
                "longest_cut": max(self.cuts[t], default=0)} for t, n in self.requests.items()}

  # ----- token-level scoring -----
  def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Ids of (context, continuation); trailing context spaces move to the continuation, and the
    continuation's ids are taken from the joint encoding (what a subword tokenizer would see)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
      context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if not context:  # lm-eval's convention: an empty context is the EOS token
      return [self.tokenizer.eos_id], self.tokenizer.encode(continuation)
    whole = self.tokenizer.encode(context + continuation)
    ctx = self.tokenizer.encode(context)
    return ctx, whole[len(ctx):]

  def windows(self, ctx: list[int], cont: list[int]) -> list[tuple[list[int], int]]:
    """(tokens, n) pieces that score `cont` after `ctx`: each piece's input is tokens[:-1] (at
    most seq_len), its last n targets are continuation tokens, each scored exactly once.

    A continuation that fits in seq_len is one piece, its context cut from the left to fit. A
    longer one (a byte-level model on long answers) is scored in consecutive blocks of seq_len
    targets, each block reading the seq_len tokens before it: lm-eval's rolling-window scheme.
    """
    full, n_ctx, length = ctx + cont, len(ctx), self.max_length
    pieces = []
    for start in range(n_ctx, len(full), length):
      stop = min(start + length, len(full))
      pieces.append((full[max(0, stop - 1 - length):stop], stop - start))
    return pieces

  def score_tokens(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """(context ids, continuation ids) -> (sum of the continuation's log-probs, all greedy).

    Each pair is one piece (`windows`) unless its continuation is longer than seq_len. Pieces run
    longest first in batches of batch_size, right-padded to fixed shapes.
    """
    for ctx, cont in pairs:
      if not cont:
        raise ValueError("loglikelihood: empty continuation (nothing to score)")
      if not ctx:
        raise ValueError("loglikelihood: empty context ids (start with the EOS id)")
    owners, pieces = [], []
    for i, (ctx, cont) in enumerate(pairs):
      for piece in self.windows(ctx, cont):
        owners.append(i)
        pieces.append(piece)
    score = _score_fn(self._graphdef)
    order = Collator(pieces, sort_fn=lambda p: -len(p[0]))
    scored = []
    bar = tqdm(total=len(pieces), desc="scoring", unit="seq", disable=not self.progress,
               mininterval=5)
    for batch in order.get_batched(n=self.batch_size):
      bar.update(len(batch))
      length = bucket(max(len(s) - 1 for s, _ in batch), self.max_length)
      inputs = np.zeros((self.batch_size, length), np.int32)  # fixed [B, bucket]: one compile
      targets = np.zeros((self.batch_size, length), np.int32)
      for row, (s, _) in enumerate(batch):
        inputs[row, :len(s) - 1], targets[row, :len(s) - 1] = s[:-1], s[1:]
      logp, greedy = jax.device_get(score(self._state, inputs, targets))
      for row, (s, n) in enumerate(batch):
        span = slice(len(s) - 1 - n, len(s) - 1)  # the continuation's targets
        scored.append((float(logp[row, span].sum()), bool(greedy[row, span].all())))
    bar.close()
    results = [(0.0, True)] * len(pairs)
    for i, (lp, greedy) in zip(owners, order.get_original(scored)):
      results[i] = (results[i][0] + lp, results[i][1] and greedy)
    return results

  # ----- the lm-eval interface -----
  def loglikelihood(self, requests) -> list[tuple[float, bool]]:
    pairs = [self._encode_pair(*r.args) for r in requests]
    for r, (ctx, cont) in zip(requests, pairs):  # what the first window leaves out of ctx
      self._count(r.task_name, len(ctx) + min(len(cont), self.max_length) - 1 - self.max_length)
    out = self.score_tokens(pairs)
    for r, res in zip(requests, out):
      self.cache_hook.add_partial("loglikelihood", r.args, res)
    return out

  def rolling_windows(self, text: str) -> list[tuple[list[int], list[int]]]:
    """Disjoint windows of seq_len tokens: every token of `text` is predicted exactly once, the
    first from EOS (lm-eval's rolling scheme, the last window taking a full context)."""
    return [make_disjoint_window(w) for w in get_rolling_token_windows(
        token_list=self.tokenizer.encode(text), prefix_token=self.tokenizer.eos_id,
        max_seq_len=self.max_length, context_len=1)]

  def loglikelihood_rolling(self, requests) -> list[float]:
    windows = [self.rolling_windows(r.args[0]) for r in requests]
    flat = self.score_tokens([w for ws in windows for w in ws])  # all windows batched together
    out, i = [], 0
    for r, ws in zip(requests, windows):
      out.append(sum(lp for lp, _ in flat[i:i + len(ws)]))
      i += len(ws)
      self.cache_hook.add_partial("loglikelihood_rolling", r.args, out[-1])
    return out

  def generate_until(self, requests) -> list[str]:
    """KV-cached decoding (greedy unless do_sample), cut at the first `until` string.

    Requests that share decoding settings share a batch (stop strings only act afterwards).
    Batches are filled to batch_size rows with a filler prompt of the bucketed length, so the
    decoder compiles once per (bucket, max_gen_toks) instead of once per prompt length.
    """
    def settings(args):
      kwargs = {k: v for k, v in args[1].items() if k != "until"}
      max_new = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
      temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
      return max_new, temperature

    eos = self.tokenizer.eos_id
    ids_of = {}  # each prompt encoded once: counted here, cut and decoded from below
    for r in requests:  # prompts keep their last seq_len - max_gen_toks tokens
      if r.args[0] not in ids_of:
        ids_of[r.args[0]] = self.tokenizer.encode(r.args[0]) or [eos]
      room = max(1, self.max_length - settings(r.args)[0])
      self._count(r.task_name, len(ids_of[r.args[0]]) - room)
    order = Collator([r.args for r in requests], sort_fn=lambda a: -len(a[0]),
                     group_by="gen_kwargs", group_fn=settings)
    results = []
    for batch in order.get_batched(n=self.batch_size):
      max_new, temperature = settings(batch[0])
      max_ctx = max(1, self.max_length - max_new)  # room for the answer within seq_len
      prompts = [ids_of[ctx][-max_ctx:] for ctx, _ in batch]
      filler = [eos] * bucket(max(map(len, prompts)), max_ctx)
      prompts += [filler] * (self.batch_size - len(prompts))
      ids, lengths = decode.generate(self.model, prompts, max_new, temperature=temperature,
                                     eos_id=eos)
      for (ctx, gen_kwargs), row, n in zip(batch, ids, lengths):
        until = gen_kwargs.get("until") or []
        text = cut_at_stop(self.tokenizer.decode(row[:n]), [until] if isinstance(until, str)
                           else until)
        results.append(text)
        self.cache_hook.add_partial("generate_until", (ctx, gen_kwargs), text)
    return order.get_original(results)


def cut_at_stop(text: str, until: Sequence[str]) -> str:
  """`text` up to the earliest occurrence of any stop string (empty strings ignored)."""
  cuts = [i for i in (text.find(s) for s in until if s) if i >= 0]
  return text[:min(cuts)] if cuts else text
