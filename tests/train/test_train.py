"""Training: the loss goes down, resume is exact, mismatched checkpoints and bad configs refused."""
import os

import ml_collections
import numpy as np
import pytest

from configs import model_tiny
from phd_jax.checkpoints.checkpoint import Checkpointer, CheckpointMismatchError
from phd_jax.config import validate_config
from phd_jax.data import text, windows
from phd_jax.data.tokenizers import ByteTokenizer
from phd_jax.train.loop import train_and_evaluate
from phd_jax.train.state import create_state
from tests import commands
from tests.helpers import (
  LONG_RUN,
  RESUMABLE_RUN,
  Preempted,
  losses,
  preempt_after,
  tiny_config,
  tiny_flags,
)
from tests.shared import copy_run


@pytest.mark.integration
def test_a_few_steps_lower_the_loss(corpus_glob, trained_runs):
  cfg = tiny_config(corpus_glob, **LONG_RUN)  # 20 steps
  got = losses(trained_runs(cfg))
  assert sorted(got) == list(range(1, 21))
  assert np.mean([got[19], got[20]]) < np.mean([got[1], got[2]]) - 0.5
  assert 0 < trained_runs.summary(cfg)["val_bits_per_byte"] < 8


@pytest.mark.integration
def test_resume_gives_the_same_losses(corpus_glob, trained_runs, tmp_path):
  cfg = tiny_config(corpus_glob, **RESUMABLE_RUN)  # 8 steps, a checkpoint every 2
  with pytest.raises(Preempted):
    train_and_evaluate(cfg, str(tmp_path), on_step=preempt_after(7))
  assert sorted(losses(tmp_path)) == [1, 2, 3, 4, 5, 6, 7]
  train_and_evaluate(cfg, str(tmp_path))  # picks up at the step-6 checkpoint
  a, b = losses(trained_runs(cfg)), losses(tmp_path)
  assert sorted(b) == list(range(1, 9))
  np.testing.assert_allclose([b[s] for s in (7, 8)], [a[s] for s in (7, 8)], rtol=1e-6)


@pytest.mark.integration
def test_checkpoint_of_another_model_shape_is_refused(corpus_glob, trained_runs, tmp_path):
  cfg = tiny_config(corpus_glob, **RESUMABLE_RUN)
  run = copy_run(trained_runs(cfg), tmp_path / "run")
  before = sorted(os.listdir(run / "checkpoints"))
  cfg.model.d_model = 96
  cfg.train.steps = 10
  with pytest.raises(CheckpointMismatchError, match=r"model\.d_model: checkpoint 64, config 96"):
    train_and_evaluate(cfg, str(run))
  assert sorted(os.listdir(run / "checkpoints")) == before


@pytest.mark.parametrize("section, field, value", [
    ("train", "batch_size", 0),
    ("train", "learning_rate", -1.0),
    ("data", "source", "web"),
    ("data", "val_fraction", 1.5),
    ("model", "vocab_size", 100),
    ("model", "num_kv_heads", 3),
])
def test_bad_config_raises_before_compiling(section, field, value):
  cfg = model_tiny.get_config()
  cfg[section][field] = value
  with pytest.raises(ValueError, match=rf"config\.{section}\.{field}"):
    validate_config(cfg, ByteTokenizer.vocab_size)


def test_data_split_and_iterator_state(corpus_glob):
  cfg = tiny_config(corpus_glob).data
  a, b = text.load_corpus(cfg), text.load_corpus(cfg)
  assert a.fingerprint == b.fingerprint and a.train_files + a.val_files == 12
  assert a.val_files >= 1 and np.array_equal(a.val, b.val)
  assert ByteTokenizer().decode(ByteTokenizer().encode("héllo\n")) == "héllo\n"
  it = iter(windows.train_dataset(a.train, 16, 2, seed=0))
  next(it)
  state = it.get_state()
  expected = next(it)
  it2 = iter(windows.train_dataset(a.train, 16, 2, seed=0))
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["inputs"], expected["inputs"])
  np.testing.assert_array_equal(expected["targets"][:, :-1], expected["inputs"][:, 1:])


@pytest.mark.integration
def test_command_line(corpus_glob, trained_runs, tmp_path):
  """phd-generate on a finished run and on a missing one; phd-train refusing a bad variant.
  (phd-train itself runs to the end in test_ops.py, tests/configs and tests/cli.)"""
  run = trained_runs(tiny_config(corpus_glob, **LONG_RUN))
  gen = ["--max_new_tokens=4", "--prompt=def", "--prompt=import os"]
  sampled = commands.phd("phd-generate", *gen, f"--workdir={run}")
  assert "checkpoint step 20" in sampled.stdout and "prompt 'import os'" in sampled.stdout
  missing = commands.phd("phd-generate", *gen, f"--workdir={tmp_path / 'nowhere'}", expect=None)
  assert missing.returncode != 0 and "no checkpoints" in missing.stderr
  bad = commands.phd("phd-train", f"--workdir={tmp_path}", *tiny_flags(corpus_glob, steps=2),
                     "--config.model.phd.variant=phd_xl", expect=None)
  assert bad.returncode != 0
  assert "config.model.phd" in bad.stderr and "phd_xl" in bad.stderr


def test_config_of_a_run_saved_before_newer_fields_reads_back_as_it_trained(corpus_glob, tmp_path):
  cfg = tiny_config(corpus_glob)
  old = cfg.to_dict()
  for section, field in (("model", "qk_norm"), ("model", "xla_block"), ("data", "tokenizer")):
    del old[section][field]
  ckpt = Checkpointer(str(tmp_path), keep=1)
  ckpt.save(0, create_state(cfg)[1], None, ml_collections.ConfigDict(old))
  ckpt.wait()
  saved = ckpt.saved_config(0)
  ckpt.close()
  assert saved.model.qk_norm == "head"  # what the model did before the field existed
  assert saved.model.xla_block == cfg.model.xla_block and saved.data.tokenizer == "bytes"

