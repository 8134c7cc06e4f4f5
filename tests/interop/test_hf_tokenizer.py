"""phd-hf carries the tokenizer both ways: an export stands on its own (tokenizer files, special
ids in config.json and generation_config.json); an import takes the checkpoint's tokenizer,
refuses one that does not fit its embedding, and copies it beside the imported weights.
(Loading an export with transformers itself: tests/interop/test_olmo2_live.py,
`make test-interop`.)"""
import json
import os

import pytest
import tokenizers as hf_tokenizers
from flax import nnx

from configs import model_tiny
from phd_jax.checkpoints.load import load_run
from phd_jax.data.tokenizers import ByteTokenizer, HFTokenizer, for_run
from phd_jax.interop import hf_tokenizer
from phd_jax.interop.olmo2 import import_weights, save_olmo2
from phd_jax.model.transformer import Transformer
from tests import commands
from tests.helpers import VANILLA_RUN, tiny_config

TEXTS = ["def value(self):\n\treturn 'café' + \"ü\"", "  two  spaces ", "日本語 🎉 x"]


def vanilla(vocab_size, seed=0):
  m = model_tiny.get_config("vanilla").model
  m.vocab_size = vocab_size
  return Transformer(m, rngs=nnx.Rngs(seed))


def read(folder, name):
  with open(os.path.join(folder, name)) as f:
    return json.load(f)


@pytest.mark.integration
def test_a_byte_level_run_exports_a_tokenizer_that_encodes_like_its_own(corpus_glob, trained_runs,
                                                                        tmp_path):
  cfg = tiny_config(corpus_glob, **VANILLA_RUN)
  out = tmp_path / "hf"
  commands.phd("phd-hf", "export", f"--workdir={trained_runs(cfg)}", f"--out={out}")
  assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors",
                                     "tokenizer.json", "tokenizer_config.json"]
  ids = {"bos_token_id": 256, "eos_token_id": 256, "pad_token_id": 256}
  assert {k: read(out, "config.json")[k] for k in ids} == ids
  assert {k: read(out, "generation_config.json")[k] for k in ids} == ids
  tok_cfg = read(out, "tokenizer_config.json")
  assert tok_cfg["eos_token"] == "<|endoftext|>"
  assert tok_cfg["model_max_length"] == VANILLA_RUN["seq_len"]
  exported = hf_tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
  for text in TEXTS:
    assert exported.encode(text, add_special_tokens=False).ids == ByteTokenizer().encode(text)
  assert exported.token_to_id("<|endoftext|>") == 256

  back = str(tmp_path / "back")  # and in again: recognised as the byte tokenizer
  assert import_weights(str(out), back, cfg) == "bytes"
  assert load_run(back)[1].data.tokenizer == "bytes"


def test_an_hf_tokenizer_run_exports_its_tokenizer_json(bpe_path, tmp_path):
  tok = HFTokenizer(bpe_path)
  save_olmo2(vanilla(384), str(tmp_path), tok, max_length=64)
  with open(tmp_path / "tokenizer.json") as a, open(bpe_path) as b:
    assert a.read() == b.read()
  assert read(tmp_path, "config.json")["eos_token_id"] == tok.eos_id
  assert read(tmp_path, "tokenizer_config.json")["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_import_takes_the_directorys_tokenizer_and_copies_it_into_the_run(bpe_path, corpus_glob,
                                                                          tmp_path):
  tok = HFTokenizer(bpe_path)
  hf = str(tmp_path / "hf")
  save_olmo2(vanilla(384), hf, tok)
  cfg = tiny_config(corpus_glob)
  cfg.data.update(source="tokens", text_files="", token_dir="/data/prepared/later")
  run = str(tmp_path / "run")
  assert import_weights(hf, run, cfg) == os.path.join(hf, "tokenizer.json")
  _, saved, step = load_run(run)
  assert step == 0 and saved.data.tokenizer == os.path.join(run, "tokenizer.json")
  assert for_run(run, saved).fingerprint() == tok.fingerprint()  # the run's own copy

  other = str(tmp_path / "other.json")  # --tokenizer wins over the directory's
  with open(bpe_path) as f, open(other, "w") as g:
    g.write(f.read())
  assert import_weights(hf, str(tmp_path / "run2"), cfg, tokenizer=other) == other


@pytest.mark.integration
def test_import_refuses_a_tokenizer_that_is_not_the_checkpoints(corpus_glob, bpe_path, tmp_path):
  hf = str(tmp_path / "hf")
  save_olmo2(vanilla(50304), hf)  # no tokenizer in the directory; the config's is bytes
  cfg = tiny_config(corpus_glob)
  with pytest.raises(ValueError, match=r"bytes has 257 ids .* has 50304 rows"):
    import_weights(hf, str(tmp_path / "run"), cfg)
  small = str(tmp_path / "small")
  save_olmo2(vanilla(256), small)
  with pytest.raises(ValueError, match=r"bpe.json has 296 ids .* has 256 rows"):
    import_weights(small, str(tmp_path / "run"), cfg, tokenizer=bpe_path)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
  done = commands.phd("phd-hf", "import", f"--hf_dir={hf}", "--config=configs/model_tiny.py",
                      f"--out={tmp_path / 'cli'}", expect=1)
  assert done.stderr.count("\n") == 1 and "50304 rows" in done.stderr


def test_byte_tokenizer_json_is_exactly_byte_tokenizer():
  exported = hf_tokenizers.Tokenizer.from_str(hf_tokenizer.byte_tokenizer_json())
  assert exported.get_vocab_size() == 257
  every_byte = bytes(range(256)).decode("latin-1")
  assert exported.encode(every_byte, add_special_tokens=False).ids == \
      ByteTokenizer().encode(every_byte)
