"""Every config file in configs/, shrunk to a tiny width by command-line overrides, trains two
steps, writes a checkpoint and samples text through both CLIs: the paper-size configs (scanned,
rematerialised layers, bf16 compute) included, in every variant. (A size config's other variants
sample only in phd-train's closing sample: phd-generate restores the same scanned bf16 layout as
for the file's own variant, which runs it.)"""
import glob
import os

import pytest

from configs import sizes
from tests import commands
from tests.helpers import ROOT

pytestmark = pytest.mark.integration

SHRINK = dict(num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128,
              vocab_size=384)
FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
               if not os.path.basename(p).startswith("_") and os.path.basename(p) != "sizes.py")
# The size configs in every variant. `make test` keeps each variant once on a size config with
# scan + remat (the files' own defaults are phd_swa for 550m and phd_cswa for 1.2b); ~25 s of CPU
# per case, so the rest are marked slow (`make test-all`).
SIZE_VARIANTS = [(f, v) for f in ("model_550m.py", "model_1_2b.py") for v in sizes.VARIANT_DEFAULTS]
FAST = {("model_550m.py", "vanilla"), ("model_1_2b.py", "phd"), ("model_550m.py", "repeat")}


def test_every_config_file_is_covered():
  assert "model_550m.py" in FILES and "model_1_2b.py" in FILES and "quickstart.py" in FILES
  assert "base.py" in FILES


def train_and_generate(config: str, corpus_glob: str, workdir, generate: bool = True) -> None:
  overrides = [f"--config.model.{k}={v}" for k, v in SHRINK.items()] + [
      "--config.data.source=text_files", f"--config.data.text_files={corpus_glob}",
      "--config.data.tokenizer=bytes",  # the size configs otherwise require a real tokenizer
      "--config.train.steps=2", "--config.train.batch_size=2", "--config.train.seq_len=16",
      "--config.train.val_batches=1", "--config.train.checkpoint_every=100",
      "--config.train.sample_tokens=4", "--config.train.warmup_steps=1"]
  train = commands.phd("phd-train", f"--config=configs/{config}", f"--workdir={workdir}",
                       *overrides, timeout=600)
  assert "----- sample -----" in train.stdout  # the closing sample, after training
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
  if not generate:
    return
  gen = commands.phd("phd-generate", f"--workdir={workdir}", "--max_new_tokens=4",
                     "--prompt=def ", "--prompt=import os", timeout=600)
  assert "checkpoint step 2" in gen.stdout and "prompt 'import os'" in gen.stdout


@pytest.mark.parametrize("config", [  # the small files are base.py plus a variant: slow only
    pytest.param(f, marks=() if f.startswith(("model_550m", "model_1_2b")) else pytest.mark.slow)
    for f in FILES])
def test_config_file_trains_and_generates(config, corpus_glob, tmp_path):
  train_and_generate(config, corpus_glob, tmp_path)


@pytest.mark.parametrize("config, variant", [
    pytest.param(f, v, marks=() if (f, v) in FAST else pytest.mark.slow)
    for f, v in SIZE_VARIANTS if v != {"model_550m.py": "phd_swa",
                                       "model_1_2b.py": "phd_cswa"}[f]])
def test_size_config_variant_trains_and_samples(config, variant, corpus_glob, tmp_path):
  train_and_generate(f"{config}:{variant}", corpus_glob, tmp_path, generate=False)
