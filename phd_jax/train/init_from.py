"""config.train.init_from: a new run starts from a model's weights with a fresh optimizer.

As Levanter's `initialize_from`: continued pretraining, PHD from vanilla (or OLMo2) weights, a new
schedule from an old run's model. The field names one of

  RUN         a run's workdir: its newest step that loads (a damaged newer one is named)
  RUN:STEP    a run's workdir at step STEP (e.g. runs/base:2000)
  WEIGHTS     model-only weights `phd-hf import --out=WEIGHTS` wrote (read like a run: one step)
  HF_DIR      a Hugging Face OLMo2 folder (config.json + safetensors), read directly

each a local path or a gs:// / s3:// URL. A folder with `checkpoints/` is a run (or imported
weights); one with `config.json` an OLMo2 folder. Only the model's parameters are taken: the
optimizer starts fresh (zero moments, update count 0), and so do the step count and the data.
The config's model must have the weights' parameter shapes (one line names the fields that
differ); its PHD fields, dtypes and attention path may differ, as PHD adds no parameters. Weights
that carry a tokenizer must be trained with that tokenizer. Once the run has a checkpoint of its
own it resumes from that, and init_from is ignored (the log says so).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from phd_jax import files as fs
from phd_jax.checkpoints import recovery
from phd_jax.checkpoints.checkpoint import (
  Checkpointer,
  CheckpointMismatchError,
  describe,
  model_changes,
  warn,
)
from phd_jax.data import tokenizers
from phd_jax.data.tokenizers import Tokenizer
from phd_jax.interop import hf_tokenizer, olmo2

STEP = re.compile(r"(.+):(\d+)")  # RUN:STEP; a URL's scheme colon is followed by //, not digits


@dataclasses.dataclass
class Weights:
  """Weights to start from, before any array is read."""
  step: int | None  # the run's step; None for an OLMo2 folder
  model: ml_collections.ConfigDict  # the model config they were saved with
  tokenizer: Tokenizer | None  # the tokenizer they carry; None: they carry none
  load: Callable[[nnx.State], None]  # into a model's state of that shape, in place


def parse(spec: str) -> tuple[str, int | None]:
  """'runs/x:200' -> ('runs/x', 200); 'runs/x' -> ('runs/x', None)."""
  found = STEP.fullmatch(spec)
  return (found.group(1), int(found.group(2))) if found else (spec, None)


def initialize(cfg: ml_collections.ConfigDict, state: nnx.State, tok: Tokenizer,
               resumed: int | None, say: Callable[..., None]) -> None:
  """Puts the weights `cfg.train.init_from` names into the training state's model (`state[0]`,
  on its shardings) in place; the optimizer in `state[1]` stays fresh. `resumed`: the step the
  run resumed from (then init_from is ignored), None for a new run. `tok`: the run's tokenizer."""
  source = cfg.train.init_from
  if not source:
    return
  if resumed is not None:
    say(f"config.train.init_from={source} ignored: the run resumes from its own checkpoint "
        f"(step {resumed})")
    return
  weights = open_weights(source, cfg.model)
  changes, reshaping = model_changes(weights.model, cfg.model)
  if reshaping:
    flags = " ".join(f"--config.{path}={value}" for path, value, _ in reshaping)
    raise CheckpointMismatchError(
        f"config.train.init_from={source} holds a model with other parameter shapes than the "
        f"config's: {'; '.join(describe(reshaping, 'weights'))}. Give the config the weights' "
        f"values ({flags}) or start from other weights")
  _check_tokenizer(weights.tokenizer, tok, cfg, source)
  weights.load(state[0])
  changed = describe(changes, "weights")
  say(f"initialized the model from {source}"
      + (f" (step {weights.step})" if weights.step is not None else "")
      + ": its parameters only, a fresh optimizer, training from step 1"
      + (f" (changed model fields: {'; '.join(changed)})" if changed else ""))


def open_weights(source: str, model_cfg: ml_collections.ConfigDict) -> Weights:
  """The weights `source` (init_from's syntax) names, checked to exist; nothing loaded yet."""
  path, step = parse(source)
  fs.check_access(path, "config.train.init_from")
  if fs.isdir(fs.join(path, "checkpoints")):
    return _run_weights(source, path, step)
  if fs.isfile(fs.join(path, "config.json")):
    if step is not None:
      raise ValueError(f"config.train.init_from={source}: {path} is a Hugging Face folder, "
                       "which has no steps: name it without :STEP")
    return _olmo2_weights(path, model_cfg)
  raise ValueError(f"config.train.init_from={source} is invalid: {path} holds neither a run "
                   "(checkpoints/; also what `phd-hf import` writes) nor a Hugging Face OLMo2 "
                   "folder (config.json + safetensors)")


def _run_weights(source: str, path: str, step: int | None) -> Weights:
  ckpt = Checkpointer(path, keep=1)
  try:
    if step is None:
      found = ckpt.restore_newest(ckpt.saved_config, log=warn, move_aside=False)
      if found is None:
        raise ValueError(f"config.train.init_from={source}: no complete checkpoint in "
                         f"{ckpt.directory}")
      step, saved = found
    elif step not in ckpt.manager.all_steps():
      raise ValueError(f"config.train.init_from={source}: {ckpt.directory} has no step {step} "
                       f"(its steps: {sorted(ckpt.manager.all_steps())})")
    else:
      saved = ckpt.saved_config(step)
  finally:
    ckpt.close()

  def load(model_state: nnx.State) -> None:
    reader = Checkpointer(path, keep=1)
    try:
      reader.restore_params(step, model_state)
    except Exception as e:  # orbax and tensorstore raise all kinds
      raise ValueError(f"config.train.init_from={source}: step {step} does not restore "
                       f"({recovery.reason(e, reader.directory)}); name another step: "
                       f"{path}:STEP") from None
    finally:
      reader.close()

  return Weights(step, saved.model, tokenizers.for_run(path, saved), load)


def _olmo2_weights(path: str, model_cfg: ml_collections.ConfigDict) -> Weights:
  where = fs.join(path, "config.json")
  # OLMo2's shapes; every other field (phd, dtypes, layout) the config's own.
  model = olmo2.olmo2_model_config(olmo2.read_config(path), model_cfg, where=where)
  spec = hf_tokenizer.find_tokenizer(path)

  def load(model_state: nnx.State) -> None:
    params = olmo2.olmo2_params(olmo2.read_tensors(path), model_cfg, path)  # host numpy
    like = nnx.to_pure_dict(model_state)
    placed = jax.tree.map(lambda a, x: jax.make_array_from_callback(
        x.shape, x.sharding, lambda index: a[index]), params, like)  # each device its shard
    nnx.replace_by_pure_dict(model_state, placed)

  return Weights(None, model, tokenizers.load(spec) if spec else None, load)


def _check_tokenizer(theirs: Tokenizer | None, ours: Tokenizer, cfg: ml_collections.ConfigDict,
                     source: str) -> None:
  """The run's tokenizer is the weights' own: the same ids must mean the same tokens."""
  if theirs is None:  # an OLMo2 folder without tokenizer files: at least its size must fit
    hf_tokenizer.check_fits(ours, cfg.model.vocab_size, f"config.train.init_from={source}",
                            flag="--config.data.tokenizer")
  elif theirs.fingerprint() != ours.fingerprint():
    raise ValueError(
        f"config.data.tokenizer={cfg.data.tokenizer!r} is not the tokenizer of "
        f"config.train.init_from={source} ({theirs.path or theirs.name}): the same ids would "
        f"mean other tokens; train with --config.data.tokenizer={theirs.path or theirs.name} "
        "(and data tokenized with it)")
