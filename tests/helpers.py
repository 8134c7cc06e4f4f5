"""Shared by the tests: the repository root, a tiny training config, a run's logged losses."""
import json
import os

from configs import model_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def tiny_config(corpus_glob, **train):
  cfg = model_tiny.get_config()
  cfg.data.update(source="text_files", text_files=corpus_glob)
  cfg.train.update(steps=8, batch_size=4, seq_len=32, val_every=100, val_batches=2,
                   checkpoint_every=100, log_every=1, warmup_steps=2, learning_rate=1e-2,
                   sample_tokens=0)
  cfg.train.update(train)
  return cfg


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}
