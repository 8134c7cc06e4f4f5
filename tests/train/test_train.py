"""Training: the loss goes down, resume is exact, mismatched checkpoints and bad configs refused."""
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import model_tiny
from phd_jax.config import validate_config
from phd_jax.data import text, windows
from phd_jax.data.tokenizers import ByteTokenizer
from phd_jax.run.checkpoint import Checkpointer, CheckpointMismatchError
from phd_jax.train.loop import train_and_evaluate
from phd_jax.train.state import create_state
from tests.helpers import ROOT, losses, tiny_config


def test_a_few_steps_lower_the_loss(corpus_glob, tmp_path):
  summary = train_and_evaluate(tiny_config(corpus_glob, steps=12), str(tmp_path))
  got = losses(tmp_path)
  assert sorted(got) == list(range(1, 13))
  assert np.mean([got[11], got[12]]) < np.mean([got[1], got[2]]) - 0.5
  assert 0 < summary["val_bits_per_byte"] < 8


class Preempted(Exception):
  pass


def test_resume_gives_the_same_losses(corpus_glob, tmp_path):
  cfg = tiny_config(corpus_glob, steps=6, checkpoint_every=3)
  train_and_evaluate(cfg, str(tmp_path / "straight"))

  def preempt(step):
    if step == 5:
      raise Preempted
  with pytest.raises(Preempted):
    train_and_evaluate(cfg, str(tmp_path / "resumed"), on_step=preempt)
  assert sorted(losses(tmp_path / "resumed")) == [1, 2, 3, 4, 5]
  train_and_evaluate(cfg, str(tmp_path / "resumed"))  # picks up at the step-3 checkpoint
  a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
  assert sorted(b) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([b[s] for s in (4, 5, 6)], [a[s] for s in (4, 5, 6)], rtol=1e-6)


def test_checkpoint_of_another_model_shape_is_refused(corpus_glob, tmp_path):
  cfg = tiny_config(corpus_glob, steps=2)
  train_and_evaluate(cfg, str(tmp_path))
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  cfg.model.d_model = 96
  cfg.train.steps = 4
  with pytest.raises(CheckpointMismatchError, match=r"model\.d_model: checkpoint 64, config 96"):
    train_and_evaluate(cfg, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


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


def test_command_line(corpus_glob, tmp_path):
  base = [sys.executable, "-m", "phd_jax.train", "--config=configs/model_tiny.py",
          f"--workdir={tmp_path}", "--config.data.source=text_files",
          f"--config.data.text_files={corpus_glob}", "--config.train.steps=2",
          "--config.train.batch_size=2", "--config.train.seq_len=16",
          "--config.train.val_batches=1", "--config.train.sample_tokens=5"]
  ok = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "val_bits_per_byte=" in ok.stdout.strip().splitlines()[-1]
  gen = [sys.executable, "-m", "phd_jax.generate", "--max_new_tokens=4", "--prompt=def",
         "--prompt=import os"]
  sampled = subprocess.run(gen + [f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
  assert sampled.returncode == 0, sampled.stderr[-2000:]
  assert "checkpoint step 2" in sampled.stdout and "prompt 'import os'" in sampled.stdout
  missing = subprocess.run(gen + [f"--workdir={tmp_path / 'nowhere'}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
  assert missing.returncode != 0 and "no checkpoints" in missing.stderr
  bad = subprocess.run(base + ["--config.model.phd.variant=phd_xl"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
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

