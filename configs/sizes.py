"""Model sizes from the paper (docs/method.md, reference figures), shared by the size configs.

The sizes other than tiny train like the paper: a ~100k-entry tokenizer (OLMo2's tokenizer.json)
over pretokenized shards, so they require `--config.data.tokenizer=PATH` and
`--config.data.token_dir=DIR` (docs/data.md); without them they refuse to start.
"""
import ml_collections

from configs import base

SIZES = {
    # name: (num_layers, d_model, num_heads, num_kv_heads, head_dim, mlp_dim)
    "tiny": (2, 64, 4, 2, 16, 192),
    "151m": (12, 768, 12, 4, 64, 2048),  # not given in docs/method.md: our OLMo2-like guess at 151M
    "550m": (16, 1536, 16, 4, 96, 4096),
    "1.2b": (16, 2048, 32, 8, 64, 8192),
}
VARIANT_DEFAULTS = {  # the paper's settings: W = 16 hidden tokens, C = 32 positions
    "vanilla": dict(num_copies=1, window=0, chunk=0),
    "phd": dict(num_copies=2, window=0, chunk=0),
    "phd_swa": dict(num_copies=2, window=16, chunk=0),
    "phd_cswa": dict(num_copies=2, window=16, chunk=32),
    "repeat": dict(num_copies=2, window=0, chunk=0),
}


def sized_config(size: str, variant: str) -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"size={size!r} is not one of {tuple(SIZES)}")
  if variant not in VARIANT_DEFAULTS:
    raise ValueError(f"variant={variant!r} (the config argument) is not one of "
                     f"{tuple(VARIANT_DEFAULTS)}")
  cfg = base.get_config()
  m = cfg.model
  (m.num_layers, m.d_model, m.num_heads, m.num_kv_heads, m.head_dim, m.mlp_dim) = SIZES[size]
  cfg.model.phd.variant = variant
  cfg.model.phd.update(VARIANT_DEFAULTS[variant])
  if size != "tiny":  # pretraining settings in the paper's regime
    m.vocab_size = 100_352  # OLMo2's 100,278 tokens, padded to a multiple of 128
    cfg.data.update(source="tokens", tokenizer="")  # required: validation names the field
    m.tie_embeddings = False
    m.rope_theta = 500_000.0
    m.param_dtype, m.dtype = "float32", "bfloat16"
    m.remat, m.scan_layers = True, True
    cfg.train.update(seq_len=4096, batch_size=256, learning_rate=4e-4, warmup_steps=2000,
                     steps=100_000, val_every=1000, checkpoint_every=1000)
  return cfg
