"""`make demo`: PHD-CSWA with K = 2, small enough to pretrain on 2 CPU cores in a few minutes."""
from configs import base


def get_config():
  cfg = base.get_config()
  cfg.model.phd.update(variant="phd_cswa", num_copies=2, window=16, chunk=32)
  cfg.model.update(num_layers=4, d_model=192, num_heads=4, num_kv_heads=2, head_dim=48,
                   mlp_dim=512)
  cfg.train.update(steps=300, batch_size=16, seq_len=128, learning_rate=3e-3, warmup_steps=30,
                   val_every=100, checkpoint_every=100, log_every=20,
                   sample_tokens=0)  # make demo samples with phd-generate
  return cfg
