"""Every default of a run's config, in one place.

configs/*.py start from `default_config()` and change a few fields; command-line flags override
any field the ml_collections way:
  phd-train --config=configs/phd_cswa.py --config.model.phd.num_copies=3
Fields renamed or added since runs were saved are mapped in phd_jax/config/upgrade.py.
"""
from __future__ import annotations

import ml_collections

XLA_BLOCK = 256  # model.xla_block: query positions per block of the xla attention path
LOSS_CHUNK = 512  # train.loss_chunk: positions whose logits the loss makes at once


def default_config() -> ml_collections.ConfigDict:
  """A fresh copy of every default; configs/ files start from it and change a few fields."""
  cfg = ml_collections.ConfigDict()
  cfg.seed = 0

  cfg.model = m = ml_collections.ConfigDict()
  m.num_layers = 4
  m.d_model = 256
  m.num_heads = 4
  m.num_kv_heads = 2
  m.head_dim = 64
  m.mlp_dim = 768
  # >= the tokenizer's vocabulary (bytes: 257, EOS included); a multiple of 128 suits TPUs.
  # "auto": the tokenizer's vocabulary rounded up to a multiple of 128, fixed at training start.
  m.vocab_size = ml_collections.FieldReference(384, field_type=object)
  m.tie_embeddings = True
  m.rope_theta = 10_000.0
  m.norm_eps = 1e-6
  m.qk_norm = "full"  # RMSNorm of q and k: full (OLMo2: the whole projection) | head | none
  m.init_std = 0.02  # normal init of every weight matrix and the embedding (OLMo2's scale)
  m.attention_impl = "xla"  # dense (reference, tests) | xla | pallas | jax (K=1 only, a baseline)
  m.xla_block = XLA_BLOCK  # query positions per block of the xla path: memory ~ block*K*L per head
  m.pallas_block_q = 128  # tile sizes of the Pallas kernel (TPU: multiples of 128 suit best)
  m.pallas_block_kv = 128
  m.param_dtype = "float32"
  m.dtype = "float32"  # compute dtype; bfloat16 for TPU
  m.remat = False  # recompute each block in the backward pass (saves activation memory)
  m.scan_layers = False  # one compiled block scanned over depth (faster compiles for deep models)

  m.phd = p = ml_collections.ConfigDict()
  p.variant = "vanilla"  # vanilla | phd | phd_swa | phd_cswa | repeat
  p.num_copies = 1  # K
  p.window = 0  # W, hidden tokens (phd_swa, phd_cswa)
  p.chunk = 0  # C, positions (phd_cswa)
  p.position_scheme = "shared"  # shared: every copy uses position n | interleaved: n*K + j
  p.copy_embedding = False  # learned per-copy embedding added to the inputs (not in the paper)

  # Devices: data x fsdp x tensor; -1 takes the remaining devices (default: all on data).
  cfg.mesh = mesh = ml_collections.ConfigDict()
  mesh.data = -1
  mesh.fsdp = 1
  mesh.tensor = 1
  mesh.rules = (  # logical axis -> mesh axes (None: replicated)
      ("batch", ("data", "fsdp")),
      ("length", None),
      ("embed", "fsdp"),
      ("act_embed", None),
      ("heads", "tensor"),
      ("kv_heads", "tensor"),
      ("mlp", "tensor"),
      ("vocab", "tensor"),
      ("layers", None),
      ("copies", None),
  )

  cfg.data = d = ml_collections.ConfigDict()
  d.source = "stdlib"  # stdlib (the standard library's .py) | text_files | tokens | mixture
  d.text_files = ""  # glob(s), comma separated, for source=text_files
  # bytes | PATH.json (HF tokenizers, e.g. OLMo2's tokenizer.json) | PATH.model (SentencePiece);
  # copied into the workdir, so generate/evaluate use the run's own. stdlib/text_files: bytes only.
  d.tokenizer = "bytes"
  d.token_dir = ""  # source=tokens: a phd-prepare output directory
  d.token_files = ""  # source=tokens, or: glob(s) of token files made elsewhere (.npy or raw)
  d.token_dtype = ""  # raw token_files' dtype: uint16 | uint32 | int32 | int64 (.npy: its own)
  d.val_fraction = 0.02  # share of files held out for validation (split by file, deterministic)
  # source=mixture: {name: {"path": phd-prepare folder or token-file glob, "weight": w[, "dtype"]}}
  # and new weights from given steps: ((step, {name: weight}), ...) (phd_jax/data/mixture.py).
  d.mixture = ml_collections.ConfigDict()
  d.mixture_schedule = ()
  d.seed = 0

  cfg.train = t = ml_collections.ConfigDict()
  # A new run's starting weights (phd_jax/train/init_from.py), a fresh optimizer either way:
  # "" (from scratch) | RUN | RUN:STEP | WEIGHTS (phd-hf import) | HF_DIR (an OLMo2 folder).
  # Ignored once the run has a checkpoint of its own (it resumes from that).
  t.init_from = ""
  t.steps = 1000
  t.batch_size = 16
  t.seq_len = 256  # original tokens (positions) per sequence; the model sees K times as many
  t.learning_rate = 3e-3
  t.warmup_steps = 100
  t.end_lr_fraction = 0.1  # cosine decays to this fraction of the peak
  t.weight_decay = 0.1
  t.b1 = 0.9
  t.b2 = 0.95
  t.grad_clip = 1.0
  t.z_loss = 0.0  # OLMo2's z-loss: adds z_loss * mean(logsumexp(logits)^2); 0 = off (OLMo2: 1e-5)
  t.loss_chunk = LOSS_CHUNK  # positions whose logits the loss makes at once (memory, not math)
  t.log_every = 10
  t.val_every = 200  # steps between validation-loss measurements (and at the last step)
  t.val_batches = 8  # validation batches per measurement (the same ones every time)
  t.checkpoint_every = 200
  t.keep_checkpoints = 2
  # A second, node-local checkpoint tier (phd_jax/checkpoints/tiers.py; docs/training.md):
  t.local_checkpoint_every = 0  # steps between saves to local_checkpoint_dir (0: off)
  t.local_checkpoint_dir = ""  # a folder on each host's own disk (not a bucket); required if on
  t.keep_local_checkpoints = 2  # the node-local tier keeps only its newest this many steps
  t.grad_accum_steps = 1  # microbatches per step (lax.scan in the step): batch_size / this each
  t.profile_steps = (0, 0)  # (start, stop): jax.profiler trace of steps start..stop-1 into
                            # WORKDIR/profile; an empty range (the default) traces nothing
  t.sample_tokens = 200  # tokens sampled at the end (0 to skip)
  t.sample_prompt = "def "
  t.sample_temperature = 0.7

  # Downstream evals (lm-eval tasks) on the live parameters during training, logged to
  # metrics.jsonl as eval/<task>/<metric>; validation loss is train.val_*. No tasks: none run.
  cfg.eval = e = ml_collections.ConfigDict()
  e.tasks = ""  # lm-eval task names, comma separated; "paper" = the paper's seven benchmarks
  e.every = 1000  # steps between evals (and at the last step)
  e.include_path = ""  # directory of local task YAMLs (offline tasks)
  e.limit = 0  # documents per task (0: all)
  e.num_fewshot = -1  # -1: each task's default
  e.batch_size = 8  # requests per forward pass

  # Where a run is watched besides metrics.jsonl and TensorBoard (WORKDIR/tb, always written).
  cfg.log = ml_collections.ConfigDict()
  cfg.log.wandb = w = ml_collections.ConfigDict()  # Weights & Biases: pip install -e '.[wandb]'
  w.mode = "off"  # off (wandb is never imported) | online | offline (files in WORKDIR/wandb)
  w.project = "phd-jax"  # the W&B project
  w.entity = ""  # the W&B team or user ("": your default entity)
  w.name = ""  # the run's display name ("": the workdir's folder name)
  w.group = ""  # runs shown together (e.g. a sweep's seeds); "": none
  w.tags = ""  # comma separated
  return cfg
