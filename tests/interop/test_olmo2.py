"""OLMo2 interop without torch: golden logits from transformers, export round trip, bad input,
and the export command. (Continued pretraining from imported weights, through the commands:
tests/interop/test_init_from.py.)"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from configs import base, model_tiny
from phd_jax.checkpoints.load import load_run
from phd_jax.interop.olmo2 import load_olmo2, read_tensors, save_olmo2
from phd_jax.model.transformer import Transformer
from tests import commands
from tests.helpers import FIXTURES, VANILLA_RUN, golden, shard_in_two, tiny_config

GOLDEN = golden()


def rel_error(got, want) -> float:
  return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def layout(scan: bool):
  m = base.get_config().model
  m.update(scan_layers=scan, remat=scan)
  return m


@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan+remat"])
@pytest.mark.parametrize("name", ["olmo2_tied", "olmo2_untied"])
def test_load_olmo2_reproduces_transformers_logits(name, scan):
  model = load_olmo2(os.path.join(FIXTURES, name), base=layout(scan))
  assert model.tie_embeddings == (name == "olmo2_tied")
  logits = model(jnp.asarray(GOLDEN["tokens"], jnp.int32))
  assert rel_error(logits, GOLDEN[name]) <= 1e-5


def copy_fixture(tmp_path, name="olmo2_untied"):
  out = tmp_path / name
  shutil.copytree(os.path.join(FIXTURES, name), out)
  return out


def edit_config(directory, **fields):
  path = directory / "config.json"
  cfg = json.loads(path.read_text())
  cfg.update(fields)
  path.write_text(json.dumps(cfg))


def test_sharded_checkpoint_and_legacy_rope_fields_load(tmp_path):
  """Released checkpoints: shards with an index, and transformers 4.x's top-level rope_theta."""
  src = shard_in_two(copy_fixture(tmp_path))
  cfg = json.loads((src / "config.json").read_text())
  theta = cfg.pop("rope_parameters")["rope_theta"]
  (src / "config.json").write_text(json.dumps({**cfg, "rope_theta": theta, "rope_scaling": None}))
  logits = load_olmo2(str(src))(jnp.asarray(GOLDEN["tokens"], jnp.int32))
  assert rel_error(logits, GOLDEN["olmo2_untied"]) <= 1e-5


def test_phd_reuses_the_olmo2_weights():
  path = os.path.join(FIXTURES, "olmo2_tied")
  vanilla = load_olmo2(path)
  phd1 = load_olmo2(path, phd=dict(variant="phd", num_copies=1))
  phd2 = load_olmo2(path, phd=dict(variant="phd_cswa", num_copies=2, window=2, chunk=4))
  x = jnp.asarray(GOLDEN["tokens"], jnp.int32)
  np.testing.assert_allclose(phd1(x), vanilla(x), atol=1e-6)  # K=1 is OLMo2 itself
  params = lambda mod: jax.tree.leaves(nnx.state(mod, nnx.Param))
  same = lambda a, b: all(np.array_equal(u, v) for u, v in zip(params(a), params(b)))
  assert same(vanilla, phd2)  # no new parameters, the same values
  assert np.abs(np.asarray(phd2(x) - vanilla(x))).max() > 1e-3  # but another computation


@pytest.mark.parametrize("name", ["olmo2_tied", "olmo2_untied"])
@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan"])
def test_save_olmo2_writes_back_the_same_tensors(tmp_path, name, scan):
  src = os.path.join(FIXTURES, name)
  save_olmo2(load_olmo2(src, base=layout(scan)), str(tmp_path / "out"))
  want, got = read_tensors(src), read_tensors(str(tmp_path / "out"))
  assert sorted(got) == sorted(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  again = load_olmo2(str(tmp_path / "out"))  # and its config.json describes the same model
  assert rel_error(again(jnp.asarray(GOLDEN["tokens"], jnp.int32)), GOLDEN[name]) <= 1e-5


@pytest.mark.parametrize("change, match", [
    (dict(variant="phd", num_copies=2), "K=2 copies"),
    (dict(copy_embedding=True), "copy embedding"),
    ("head", "qk_norm='head'"),
])
def test_save_olmo2_refuses_what_olmo2_cannot_hold(tmp_path, change, match):
  m = model_tiny.get_config().model
  m.phd.update(variant="vanilla", num_copies=1, window=0, chunk=0)
  if change == "head":
    m.qk_norm = "head"
  else:
    m.phd.update(change)
  with pytest.raises(ValueError, match=match):
    save_olmo2(Transformer(m, rngs=nnx.Rngs(0)), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_bad_hf_directories_name_the_problem(tmp_path):
  src = copy_fixture(tmp_path)
  edit_config(src, model_type="llama")
  with pytest.raises(ValueError, match=r"model_type='llama'.*only 'olmo2'"):
    load_olmo2(str(src))
  edit_config(src, model_type="olmo2", attention_bias=True)
  with pytest.raises(ValueError, match="attention_bias"):
    load_olmo2(str(src))
  edit_config(src, attention_bias=False, rope_parameters={"rope_type": "yarn", "factor": 4.0})
  with pytest.raises(ValueError, match="rope type 'yarn'"):
    load_olmo2(str(src))
  edit_config(src, rope_parameters={"rope_type": "default", "rope_theta": 1e4}, vocab_size=40)
  with pytest.raises(ValueError, match=r"model.embed_tokens.weight has shape \(48, 24\), but "
                                       r"config.json implies \(40, 24\)"):
    load_olmo2(str(src))  # a vocabulary larger than the config allows
  edit_config(src, vocab_size=48)
  tensors = load_file(src / "model.safetensors")
  tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"].T
  save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ValueError, match=r"model.layers.1.mlp.up_proj.weight has shape \(24, 40\)"):
    load_olmo2(str(src))
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ValueError, match="tensor model.layers.1.mlp.up_proj.weight is missing"):
    load_olmo2(str(src))
  with pytest.raises(ValueError, match="no config.json"):
    load_olmo2(str(tmp_path))


@pytest.mark.integration
def test_export_cli_writes_a_loadable_vanilla_run(corpus_glob, trained_runs, tmp_path):
  run = trained_runs(tiny_config(corpus_glob, **VANILLA_RUN))
  commands.phd("phd-hf", "export", f"--workdir={run}", f"--out={tmp_path / 'hf'}")
  model, _, _ = load_run(str(run))
  x = jnp.asarray(GOLDEN["tokens"], jnp.int32)
  np.testing.assert_allclose(load_olmo2(str(tmp_path / "hf"))(x), model(x), atol=1e-5)
