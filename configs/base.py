"""Every default in one place; experiment files start from here and change a few fields.

Override any field from the command line, the ml_collections way:
  python -m phd_jax.train --config=configs/phd_cswa.py --config.model.phd.num_copies=3
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.seed = 0

  cfg.model = m = ml_collections.ConfigDict()
  m.num_layers = 4
  m.d_model = 256
  m.num_heads = 4
  m.num_kv_heads = 2
  m.head_dim = 64
  m.mlp_dim = 768
  m.vocab_size = 384  # >= the tokenizer's 257 (bytes + EOS); a multiple of 128 suits TPUs
  m.tie_embeddings = True
  m.rope_theta = 10_000.0
  m.norm_eps = 1e-6
  m.init_std = 0.02  # normal init of every weight matrix and the embedding (OLMo2's scale)
  m.attention_impl = "xla"  # dense (reference, tests) | xla | pallas | jax (K=1 only, a baseline)
  m.xla_block = 256  # query positions per block of the xla path: memory ~ block * K * L per head
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
  d.source = "stdlib"  # stdlib: this interpreter's standard library .py files | text_files
  d.text_files = ""  # glob(s), comma separated, for source=text_files
  d.val_fraction = 0.02  # share of files held out for validation (split by file, deterministic)
  d.seed = 0

  cfg.train = t = ml_collections.ConfigDict()
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
  t.loss_chunk = 512  # positions whose logits are made at once by the loss (memory, not math)
  t.log_every = 10
  t.eval_every = 200
  t.eval_batches = 8
  t.checkpoint_every = 200
  t.keep_checkpoints = 2
  t.sample_tokens = 200  # bytes sampled at the end (0 to skip)
  t.sample_prompt = "def "
  t.sample_temperature = 0.7
  return cfg
