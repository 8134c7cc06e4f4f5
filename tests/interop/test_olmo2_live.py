"""Live OLMo2 parity with transformers, both ways: `make test-interop` (needs torch + transformers,
which the default install never has, so this file skips there).

import: a random transformers Olmo2ForCausalLM -> save_pretrained -> load_olmo2: same logits.
export: a random model of ours -> save_olmo2 -> AutoModelForCausalLM.from_pretrained: same logits.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from configs import base  # noqa: E402
from phd_jax.interop.olmo2 import load_olmo2, save_olmo2  # noqa: E402
from phd_jax.model.transformer import Transformer  # noqa: E402

TOKENS = np.random.default_rng(0).integers(0, 100, (2, 13))


def rel_error(got, want) -> float:
  return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def hf_logits(model) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(TOKENS)).logits.float().numpy()


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan+remat"])
def test_import_matches_transformers(tmp_path, tied, scan):
  cfg = transformers.Olmo2Config(
      vocab_size=128, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
      num_attention_heads=6, num_key_value_heads=2, head_dim=16, tie_word_embeddings=tied,
      rope_theta=500_000.0, rms_norm_eps=1e-6, max_position_embeddings=64)
  torch.manual_seed(int(tied))
  hf = transformers.Olmo2ForCausalLM(cfg).eval()
  with torch.no_grad():
    for name, p in hf.named_parameters():  # away from the init, so every tensor matters
      p.copy_(1 + 0.3 * torch.randn(p.shape) if "norm" in name else 0.2 * torch.randn(p.shape))
  hf.save_pretrained(tmp_path)
  layout = base.get_config().model
  layout.update(scan_layers=scan, remat=scan)
  ours = load_olmo2(str(tmp_path), base=layout)
  assert rel_error(ours(jnp.asarray(TOKENS, jnp.int32)), hf_logits(hf)) <= 1e-5


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan"])
def test_export_loads_in_transformers(tmp_path, tied, scan):
  m = base.get_config().model
  m.update(num_layers=2, d_model=40, num_heads=4, num_kv_heads=2, head_dim=12, mlp_dim=72,
           vocab_size=128, tie_embeddings=tied, rope_theta=10_000.0, init_std=0.2,
           scan_layers=scan)
  model = Transformer(m, rngs=nnx.Rngs(3))
  # Random norm gains too: a misplaced norm weight must show.
  state = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(1), 64))
  state = jax.tree.map_with_path(
      lambda path, x: 1 + 0.3 * jax.random.normal(next(keys), x.shape)
      if "scale" in jax.tree_util.keystr(path) else x, state)
  nnx.update(model, state)
  save_olmo2(model, str(tmp_path))
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert type(hf).__name__ == "Olmo2ForCausalLM"
  assert rel_error(model(jnp.asarray(TOKENS, jnp.int32)), hf_logits(hf)) <= 1e-4


def greedy_pair(out, model, tok, prompt, new=24):
  """(transformers' greedy tokens, ours) for `prompt`, each with the export's own tokenizer."""
  from phd_jax.inference import decode
  hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
  ids = hf_tok(prompt, return_tensors="pt").input_ids
  assert ids[0].tolist() == tok.encode(prompt)  # the same ids from both tokenizers
  with torch.no_grad():
    theirs = hf.generate(ids, max_new_tokens=new, do_sample=False)[0, ids.shape[1]:].tolist()
  row, n = decode.generate(model, [tok.encode(prompt)], new, eos_id=tok.eos_id)
  ours = [int(t) for t in row[0][:n[0]]]
  assert hf_tok.decode(theirs, skip_special_tokens=True) == tok.decode(theirs)
  return theirs, ours


@pytest.mark.integration
def test_an_exported_run_generates_in_transformers_with_its_own_tokenizer(corpus_glob, tmp_path):
  """phd-hf export of a trained byte-level run: AutoTokenizer + AutoModelForCausalLM load the
  directory alone and greedy decoding gives our tokens."""
  from phd_jax.checkpoints.load import load_run
  from phd_jax.data.tokenizers import for_run
  from phd_jax.train.loop import train_and_evaluate
  from tests import commands
  from tests.helpers import tiny_config
  cfg = tiny_config(corpus_glob, steps=30)
  cfg.model.phd.update(variant="vanilla", num_copies=1, window=0, chunk=0)
  run, out = str(tmp_path / "run"), tmp_path / "hf"
  train_and_evaluate(cfg, run)
  commands.phd("phd-hf", "export", f"--workdir={run}", f"--out={out}")
  model, saved, _ = load_run(run)
  theirs, ours = greedy_pair(out, model, for_run(run, saved), "def value(self")
  assert theirs[:len(ours)] == ours and len(ours) > 0


def test_an_hf_tokenizer_export_generates_the_same_tokens(bpe_path, tmp_path):
  from phd_jax.data.tokenizers import HFTokenizer
  m = base.get_config().model
  m.update(num_layers=2, d_model=40, num_heads=4, num_kv_heads=2, head_dim=12, mlp_dim=72,
           vocab_size=384, init_std=0.2)
  m.phd.update(variant="vanilla", num_copies=1, window=0, chunk=0)
  model = Transformer(m, rngs=nnx.Rngs(5))
  tok = HFTokenizer(bpe_path)
  save_olmo2(model, str(tmp_path), tok, max_length=64)
  theirs, ours = greedy_pair(tmp_path, model, tok, "import self value for")
  assert theirs[:len(ours)] == ours and len(ours) > 0
