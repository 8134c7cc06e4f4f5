"""model.vocab_size="auto": the tokenizer's vocabulary rounded up to a multiple of 128, fixed
(and logged) when training starts; explicit sizes behave as before; anything else is named."""
import pytest

from configs import model_tiny
from phd_jax.checkpoints.load import load_run
from phd_jax.config import model_spec, resolve_vocab_size
from phd_jax.data import tokenizers
from phd_jax.eval import eval_data
from tests import commands
from tests.helpers import tiny_flags


@pytest.mark.parametrize("tokenizer, want", [("bytes", 384), ("bpe", 384), ("olmo", 50304)])
def test_auto_rounds_the_tokenizers_vocabulary_up_to_128(tokenizer, want, bpe_path,
                                                         eval_data_root):
  cfg = model_tiny.get_config()
  cfg.data.tokenizer = {"bytes": "bytes", "bpe": bpe_path,
                        "olmo": eval_data.olmo_tokenizer(eval_data_root)}[tokenizer]
  cfg.model.vocab_size = "auto"
  said, n = [], tokenizers.from_config(cfg.data).vocab_size
  resolve_vocab_size(cfg, n, said.append)
  assert cfg.model.vocab_size == want and str(want) in said[0]
  cfg.model.vocab_size = 1000  # an explicit size is kept as it is
  resolve_vocab_size(cfg, n, said.append)
  assert cfg.model.vocab_size == 1000 and len(said) == 1


@pytest.mark.parametrize("value, match", [("auto", "'auto' is fixed against the tokenizer"),
                                          ("big", "expected an int >= 1 or 'auto'"),
                                          (0, "expected an int >= 1 or 'auto'")])
def test_bad_or_unresolved_sizes_are_named(value, match):
  m = model_tiny.get_config().model
  m.vocab_size = value
  with pytest.raises(ValueError, match=rf"config\.model\.vocab_size={value!r} is invalid: {match}"):
    model_spec(m)


@pytest.mark.integration
@pytest.mark.slow  # a training subprocess (make test-all); the resolution itself is tested above
def test_auto_from_the_command_line_is_saved_as_the_size_it_became(corpus_glob, tmp_path):
  run = tmp_path / "run"
  done = commands.phd("phd-train", f"--workdir={run}", *tiny_flags(corpus_glob, steps=1),
                      "--config.model.vocab_size=auto", timeout=600)
  assert "model.vocab_size=auto: 384 (the tokenizer's 257 ids" in done.stdout
  model, cfg, _ = load_run(str(run))
  assert cfg.model.vocab_size == 384 and model.embed.embedding.shape[0] == 384
