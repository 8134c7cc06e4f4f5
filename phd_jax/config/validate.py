"""Config validation: every bad field fails here, by name and with the allowed values, before
anything is traced or compiled. It reads no files: what it checks against (the tokenizer's
vocabulary) is given by the caller, which loaded it once."""
from __future__ import annotations

import importlib.util
import os

import jax
import ml_collections

from phd_jax import files as fs
from phd_jax.config.mesh import batch_shards
from phd_jax.data import mixture
from phd_jax.spec import POSITION_SCHEMES, PHDSpec

ATTENTION_IMPLS = ("dense", "xla", "pallas", "jax")  # phd_jax/model/attention.py says what each is
DTYPES = ("float32", "bfloat16", "float16")
QK_NORMS = ("full", "head", "none")
DATA_SOURCES = ("stdlib", "text_files", "tokens", "mixture")
WANDB_MODES = ("off", "online", "offline")
VOCAB_MULTIPLE = 128  # model.vocab_size="auto" pads the tokenizer's vocabulary to this (TPU lanes)


def padded_vocab(n: int) -> int:
  """n ids rounded up to a multiple of VOCAB_MULTIPLE: what model.vocab_size="auto" becomes."""
  return -(-n // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def _need(cond: bool, field: str, value, allowed: str) -> None:
  if not cond:
    raise ValueError(f"config.{field}={value!r} is invalid: {allowed}")


def _positive_int(cfg, field: str, path: str, minimum: int = 1) -> None:
  value = cfg[field]
  _need(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{path}.{field}", value, f"expected an int >= {minimum}")


def phd_spec(model_cfg: ml_collections.ConfigDict) -> PHDSpec:
  """The attention spec of a model config, with errors that name the config field."""
  p = model_cfg.phd
  try:
    return PHDSpec(p.variant, p.num_copies, p.window, p.chunk)
  except ValueError as e:
    raise ValueError(f"config.model.phd: {e}") from None


def resolve_vocab_size(cfg: ml_collections.ConfigDict, tokenizer_vocab: int, say=print) -> None:
  """model.vocab_size="auto" -> `tokenizer_vocab` (the vocabulary of config.data.tokenizer)
  rounded up to a multiple of 128, set in `cfg` (and so saved with the run); an explicit size is
  left as it is."""
  if cfg.model.vocab_size != "auto":
    return
  size = padded_vocab(tokenizer_vocab)
  with cfg.ignore_type():
    cfg.model.vocab_size = size
  say(f"model.vocab_size=auto: {size} (the tokenizer's {tokenizer_vocab} ids, rounded up to a "
      f"multiple of {VOCAB_MULTIPLE})")


def model_spec(m: ml_collections.ConfigDict) -> PHDSpec:
  """The PHDSpec of a model config, once every model field is checked (`phd_spec` reads only the
  phd fields): what building a model or its cache starts from."""
  _need(m.vocab_size != "auto", "model.vocab_size", m.vocab_size,
        "'auto' is fixed against the tokenizer when training starts "
        "(phd_jax.config.resolve_vocab_size); give a size to build a model without one")
  _need(isinstance(m.vocab_size, int) and not isinstance(m.vocab_size, bool)
        and m.vocab_size >= 1, "model.vocab_size", m.vocab_size, "expected an int >= 1 or 'auto'")
  for f in ("num_layers", "d_model", "num_heads", "num_kv_heads", "head_dim", "mlp_dim"):
    _positive_int(m, f, "model")
  _need(m.init_std > 0, "model.init_std", m.init_std, "must be > 0")
  for f in ("pallas_block_q", "pallas_block_kv"):
    _need(isinstance(m[f], int) and m[f] >= 8 and m[f] % 8 == 0, f"model.{f}", m[f],
          "expected a multiple of 8 (TPU tiles are (8, 128)-aligned)")
  _need(m.head_dim % 2 == 0, "model.head_dim", m.head_dim, "must be even (RoPE rotates pairs)")
  _need(m.num_heads % m.num_kv_heads == 0, "model.num_heads", m.num_heads,
        f"must be a multiple of config.model.num_kv_heads={m.num_kv_heads} (grouped-query "
        "attention)")
  _need(m.attention_impl in ATTENTION_IMPLS, "model.attention_impl", m.attention_impl,
        f"allowed: {ATTENTION_IMPLS}")
  _need(m.qk_norm in QK_NORMS, "model.qk_norm", m.qk_norm,
        f"allowed: {QK_NORMS} (full: OLMo2, over all heads at once; head: per head)")
  _need(m.attention_impl != "jax" or m.phd.num_copies == 1, "model.attention_impl",
        m.attention_impl, "'jax' (jax.nn.dot_product_attention) is for K=1 models only")
  block = m.xla_block
  _need(isinstance(block, int) and not isinstance(block, bool) and block >= 1, "model.xla_block",
        block, "expected an int >= 1 (query positions per block of the xla attention path)")
  _need(m.param_dtype in DTYPES, "model.param_dtype", m.param_dtype, f"allowed: {DTYPES}")
  _need(m.dtype in DTYPES, "model.dtype", m.dtype, f"allowed: {DTYPES}")
  _need(m.phd.position_scheme in POSITION_SCHEMES, "model.phd.position_scheme",
        m.phd.position_scheme, f"allowed: {POSITION_SCHEMES}")
  return phd_spec(m)


def validate_config(cfg: ml_collections.ConfigDict, tokenizer_vocab: int) -> PHDSpec:
  """Checks a whole training config against `tokenizer_vocab`, the vocabulary of the tokenizer
  config.data.tokenizer names (loaded by the caller: a missing file fails there); returns the
  model's PHDSpec."""
  spec = model_spec(cfg.model)
  t = cfg.train
  for f in ("steps", "batch_size", "seq_len", "log_every", "val_every", "val_batches",
            "checkpoint_every", "keep_checkpoints"):
    _positive_int(t, f, "train")
  _positive_int(t, "grad_accum_steps", "train")
  _validate_local_tier(t)
  _need(t.batch_size % t.grad_accum_steps == 0, "train.grad_accum_steps", t.grad_accum_steps,
        f"must divide config.train.batch_size={t.batch_size} (equal microbatches)")
  ps = t.profile_steps
  _need(isinstance(ps, (tuple, list)) and len(ps) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in ps)
        and 0 <= ps[0] <= ps[1], "train.profile_steps", ps,
        "expected (start, stop) ints with 0 <= start <= stop; (0, 0) for no profile")
  for f in ("warmup_steps", "sample_tokens"):
    _positive_int(t, f, "train", minimum=0)
  _need(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "must be > 0")
  _need(0 <= t.end_lr_fraction <= 1, "train.end_lr_fraction", t.end_lr_fraction,
        "must be in [0, 1]")
  _need(t.grad_clip > 0, "train.grad_clip", t.grad_clip, "must be > 0")
  _need(isinstance(t.z_loss, (int, float)) and t.z_loss >= 0, "train.z_loss", t.z_loss,
        "must be a number >= 0 (0 turns the z-loss off)")
  _positive_int(t, "loss_chunk", "train")
  _need(t.sample_temperature >= 0, "train.sample_temperature", t.sample_temperature,
        "must be >= 0 (0 is greedy)")
  d = cfg.data
  _need(d.source in DATA_SOURCES, "data.source", d.source, f"allowed: {DATA_SOURCES}")
  _need(d.source != "text_files" or bool(d.text_files), "data.text_files", d.text_files,
        "set a glob (comma-separated globs allowed) when data.source='text_files'")
  _need(0 < d.val_fraction < 1, "data.val_fraction", d.val_fraction, "must be in (0, 1)")
  mixture.parse_spec(d)  # data.mixture's fields: one error naming the source and the field
  e = cfg.eval
  for f in ("every", "batch_size"):
    _positive_int(e, f, "eval")
  _positive_int(e, "limit", "eval", minimum=0)
  _positive_int(e, "num_fewshot", "eval", minimum=-1)
  _need(not e.include_path or os.path.isdir(e.include_path), "eval.include_path",
        e.include_path, "expected a directory of task YAMLs (or empty)")
  _validate_wandb(cfg.log.wandb)
  shards = batch_shards(cfg.mesh, jax.device_count())
  _need(t.batch_size % shards == 0, "train.batch_size", t.batch_size,
        f"must be a multiple of {shards}, the devices config.mesh.rules spread the batch over")
  _need(t.batch_size // t.grad_accum_steps % shards == 0, "train.grad_accum_steps",
        t.grad_accum_steps, f"leaves microbatches of {t.batch_size // t.grad_accum_steps} rows: "
        f"each must be a multiple of {shards}, the devices the batch is spread over")
  _validate_tokens(cfg, tokenizer_vocab)
  return spec


def _validate_local_tier(t: ml_collections.ConfigDict) -> None:
  """The node-local checkpoint tier's fields (phd_jax/checkpoints/tiers.py)."""
  _positive_int(t, "local_checkpoint_every", "train", minimum=0)
  _positive_int(t, "keep_local_checkpoints", "train")
  d = t.local_checkpoint_dir
  _need(isinstance(d, str), "train.local_checkpoint_dir", d, "expected a folder path (a str)")
  if t.local_checkpoint_every:
    _need(bool(d), "train.local_checkpoint_dir", d, "required when config.train."
          f"local_checkpoint_every={t.local_checkpoint_every} > 0: a folder on each host's own "
          "disk (e.g. /tmp/phd_jax_local)")
    _need(not fs.is_url(d), "train.local_checkpoint_dir", d, "must be a path on each host's "
          "own disk, not a bucket URL (gs://, s3://): the workdir is the tier that may be a "
          "bucket")


def _validate_tokens(cfg: ml_collections.ConfigDict, n: int) -> None:
  """The tokenizer (of `n` ids) fits the model's vocab and suits the data source."""
  d = cfg.data
  _need(cfg.model.vocab_size >= n, "model.vocab_size", cfg.model.vocab_size,
        f"must be >= {n}, the vocabulary of config.data.tokenizer={d.tokenizer!r} "
        f"(e.g. {padded_vocab(n)}, a multiple of 128, or 'auto', which picks that)")
  _need(d.source in ("tokens", "mixture") or d.tokenizer == "bytes", "data.tokenizer", d.tokenizer,
        f"data.source={d.source!r} reads raw bytes: use 'bytes', or tokenize the corpus with "
        "`phd-prepare` and train with data.source='tokens'")
  if d.source == "tokens":
    _need(bool(d.token_dir) != bool(d.token_files), "data.token_dir", d.token_dir,
          "data.source='tokens' needs exactly one of data.token_dir (a phd-prepare output) "
          f"and data.token_files (now {d.token_files!r})")


def _validate_wandb(w: ml_collections.ConfigDict) -> None:
  """log.wandb: a known mode, text fields, and the optional package present when it is on
  (found, not imported: a run with W&B off never imports it)."""
  _need(w.mode in WANDB_MODES, "log.wandb.mode", w.mode, f"allowed: {WANDB_MODES}")
  for f in ("project", "entity", "name", "group", "tags"):
    _need(isinstance(w[f], str), f"log.wandb.{f}", w[f], "expected a string")
  _need(w.mode == "off" or bool(w.project), "log.wandb.project", w.project,
        "name a W&B project when log.wandb.mode is on")
  _need(w.mode == "off" or importlib.util.find_spec("wandb") is not None, "log.wandb.mode",
        w.mode, "the wandb package is not installed: pip install -e '.[wandb]' "
        "(or log.wandb.mode='off')")
