"""Configs saved by earlier versions read back with today's field names and every field."""
import json

import ml_collections

from phd_jax.checkpoints.checkpoint import Checkpointer
from phd_jax.config import default_config, upgrade
from phd_jax.train.state import create_state
from tests.helpers import tiny_config


def test_renamed_fields_move_to_their_new_names():
  old = default_config().to_dict()
  old["train"]["eval_every"], old["train"]["eval_batches"] = old["train"].pop("val_every"), 3
  del old["train"]["val_batches"]
  cfg = upgrade(old)
  assert cfg.train.val_every == default_config().train.val_every and cfg.train.val_batches == 3
  assert "eval_every" not in cfg.train and "eval_batches" not in cfg.train
  assert cfg.eval.every == default_config().eval.every  # lm-eval's own field is untouched
  assert upgrade(default_config().to_dict()).to_dict() == default_config().to_dict()


def test_a_run_saved_under_the_old_names_resumes_under_the_new(corpus_glob, tmp_path):
  cfg = tiny_config(corpus_glob, val_every=5, val_batches=1)
  old = cfg.to_dict()
  old["train"]["eval_every"] = old["train"].pop("val_every")
  old["train"]["eval_batches"] = old["train"].pop("val_batches")
  ckpt = Checkpointer(str(tmp_path), keep=1)
  ckpt.save(0, create_state(cfg)[1], None, ml_collections.ConfigDict(old))
  ckpt.wait()
  saved = ckpt.saved_config(0)
  ckpt.close()
  assert saved.train.val_every == 5 and saved.train.val_batches == 1
  assert saved.to_dict() == json.loads(json.dumps(cfg.to_dict()))  # JSON keeps no tuples


def test_a_config_saved_before_the_log_section_gets_wandb_off():
  old = default_config().to_dict()
  del old["log"]
  cfg = upgrade(old)
  assert cfg.log.wandb.mode == "off"
  assert cfg.to_dict() == default_config().to_dict()
