"""OLMo2 interop on buckets (gs:// and s3:// emulators, tests/storage.py): export to, load from
and import from a bucket give exactly what the local folders give, and so does a run started
from weights in a bucket (train.init_from); a bucket out of reach fails `phd-hf` with one line
before any model is built, creating nothing local."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import model_tiny
from phd_jax import files as fs
from phd_jax.checkpoints.load import load_run
from phd_jax.data.tokenizers import ByteTokenizer
from phd_jax.interop.olmo2 import import_weights, load_olmo2, read_tensors, save_olmo2
from phd_jax.model.transformer import Transformer
from phd_jax.train import init_from
from phd_jax.train.state import create_state
from tests import commands
from tests.helpers import ROOT, golden, shard_in_two

TOKENS = jnp.asarray(golden()["tokens"], jnp.int32)


def params(model) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def vanilla_model() -> Transformer:
  m = model_tiny.get_config("vanilla").model
  m.update(tie_embeddings=False, num_layers=1)
  return Transformer(m, rngs=nnx.Rngs(3))


def no_local_url_folders(folder) -> bool:
  """Nothing like `gs:` or `s3:` was created in `folder` (a URL taken for a relative path)."""
  return not [n for n in os.listdir(folder) if n.rstrip(":") in ("gs", "gcs", "s3")]


def test_save_and_load_olmo2_through_a_bucket(bucket, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  model = vanilla_model()
  local, remote = str(tmp_path / "hf"), fs.join(bucket, "hf")
  fs.write_text(fs.join(remote, "model.safetensors.index.json"), "{}")  # stale: removed by save
  save_olmo2(model, local)
  save_olmo2(model, remote)
  assert sorted(fs.listdir(remote)) == ["config.json", "model.safetensors"]
  assert json.loads(fs.read_text(fs.join(remote, "config.json"))) == json.load(
      open(os.path.join(local, "config.json")))
  want, got = read_tensors(local), read_tensors(remote)
  assert sorted(got) == sorted(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  from_local, from_bucket = load_olmo2(local), load_olmo2(remote)
  for a, b, c in zip(params(from_bucket), params(from_local), params(model)):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  np.testing.assert_array_equal(from_bucket(TOKENS), from_local(TOKENS))
  assert no_local_url_folders(tmp_path)


def sharded_export(model: Transformer, out) -> str:
  """`model` exported to the local folder `out`, in two shards with an index."""
  save_olmo2(model, str(out))
  return str(shard_in_two(out))


def test_import_from_a_bucket_equals_a_local_import(bucket, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  model = vanilla_model()
  local = sharded_export(model, tmp_path / "hf")
  remote = fs.join(bucket, "hf")
  fs.upload_tree(local, remote)
  np.testing.assert_array_equal(load_olmo2(remote)(TOKENS), model(TOKENS))  # shards from a bucket
  cfg = model_tiny.get_config("vanilla")
  import_weights(local, str(tmp_path / "from_local"), cfg)
  import_weights(remote, fs.join(bucket, "weights"), cfg)  # from a bucket into a bucket
  a, cfg_a, step_a = load_run(str(tmp_path / "from_local"))
  b, cfg_b, step_b = load_run(fs.join(bucket, "weights"))
  assert step_a == step_b == 0 and cfg_a.model.to_dict() == cfg_b.model.to_dict()
  for x, y, z in zip(params(a), params(b), params(model)):
    np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(y, z)
  # A new run starts from either in the bucket: the weights folder, or the OLMo2 folder itself.
  cfg.model.update(tie_embeddings=False, num_layers=1)
  for source in (fs.join(bucket, "weights"), remote):
    cfg.train.init_from = source
    _, state = create_state(cfg)
    init_from.initialize(cfg, state, ByteTokenizer(), None, lambda *_: None)
    for x, y in zip(params(model), [np.asarray(v) for v in jax.tree.leaves(state[0])]):
      np.testing.assert_array_equal(x, y)
  assert no_local_url_folders(tmp_path)


def phd_hf(*args, cwd, expect=0):
  return commands.phd("phd-hf", *args, cwd=cwd, expect=expect)


@pytest.mark.integration
def test_export_cli_writes_to_a_bucket(gs_url, tmp_path):
  model, run = vanilla_model(), str(tmp_path / "run")  # imported weights export as a run does
  save_olmo2(model, str(tmp_path / "source"))
  import_weights(str(tmp_path / "source"), run, model_tiny.get_config("vanilla"))
  out = f"{gs_url}/{tmp_path.name}/hf"
  p = phd_hf("export", f"--workdir={run}", f"--out={out}", cwd=tmp_path)
  assert f"to {out} as OLMo2" in p.stdout
  for x, y in zip(params(load_olmo2(out)), params(model)):
    np.testing.assert_array_equal(x, y)
  assert sorted(os.listdir(tmp_path)) == ["run", "source"]  # no `gs:` folder beside them


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_hf_cli_fails_fast_on_a_missing_bucket(scheme, request, tmp_path):
  request.getfixturevalue(f"{scheme}_url")  # the emulator, reachable, without that bucket
  url = f"{scheme}://no-such-bucket/x"
  run = str(tmp_path / "no_run")  # never read nor made: the bucket is checked first
  config = os.path.join(ROOT, "configs", "model_tiny.py")
  for args, flag, why in [
      (["export", f"--workdir={run}", f"--out={url}"], "--out",
       f"the bucket {scheme}://no-such-bucket does not exist"),  # a write: probed
      (["import", f"--hf_dir={url}", f"--config={config}", f"--out={run}"], "--hf_dir",
       f"nothing at {url} (a missing bucket")]:  # a read: listed
    p = phd_hf(*args, cwd=tmp_path, expect=None)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith(f"error: {flag}={url}"), p.stderr[-2000:]
    assert why in errors[0]
    assert os.listdir(tmp_path) == []  # no `gs:` / `s3:` folder, no workdir
