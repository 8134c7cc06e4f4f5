"""config.train.init_from: a new run starts from a run's step, from model-only weights `phd-hf
import` wrote, or from a Hugging Face OLMo2 folder, always with a fresh optimizer; a mismatched
config fails in one line; a resumed run ignores it. And the continued-pretraining path end to end
through the installed commands, from the golden transformers fixture: import (logits equal
transformers'), train from it, resume, export."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers as hf_tokenizers
from flax import nnx

from configs import base
from phd_jax.checkpoints.checkpoint import Checkpointer, CheckpointMismatchError
from phd_jax.checkpoints.load import load_run
from phd_jax.config import default_config, upgrade
from phd_jax.data import tokenizers, windows
from phd_jax.interop.olmo2 import import_weights, load_olmo2
from phd_jax.model.transformer import Transformer
from phd_jax.train import init_from
from phd_jax.train.loop import train_and_evaluate
from phd_jax.train.setup import start_session
from phd_jax.train.state import create_state
from tests import commands
from tests.helpers import FIXTURES, golden, tiny_config

GOLDEN = golden()
# tests/interop/fixtures/olmo2_untied/config.json, as config fields (what a user would write)
UNTIED = dict(num_layers=2, d_model=24, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=40,
              vocab_size=48, tie_embeddings=False, rope_theta=500_000.0, norm_eps=1e-5)
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 .,:;()=+-\n"  # 47 ids, and EOS: the fixture's 48


def leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def same(a, b) -> bool:
  a, b = leaves(a), leaves(b)
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def params_of(model) -> dict:
  return nnx.to_pure_dict(nnx.state(model))


def assert_fresh_optimizer(opt_state) -> None:
  """nnx.Optimizer's state as created: update count 0, AdamW's moments all zero."""
  opt = nnx.to_pure_dict(opt_state)
  assert int(opt["step"]) == 0
  moments = leaves(opt["opt_state"])
  assert len(moments) > 2 and all(not np.any(m) for m in moments)


def olmo2_folder(tmp_path) -> str:
  """The untied golden fixture with a 48-id character tokenizer.json beside it (the fixture
  carries none, and the byte tokenizer's 257 ids exceed its vocabulary)."""
  folder = tmp_path / "olmo2"
  shutil.copytree(os.path.join(FIXTURES, "olmo2_untied"), folder)
  tok = hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE(
      vocab={c: i for i, c in enumerate(CHARS)}, merges=[]))
  tok.add_special_tokens([hf_tokenizers.AddedToken("<|endoftext|>", special=True)])
  tok.save(str(folder / "tokenizer.json"))
  return str(folder)


def fixture_config(tmp_path, tokenizer: str, variant: str = "vanilla"):
  """A config of the fixture's shapes, on random token files of its 47 ids."""
  rng = np.random.default_rng(0)
  for i in range(3):
    np.save(tmp_path / f"part{i}.npy", rng.integers(0, len(CHARS), 400).astype(np.uint16))
  cfg = base.get_config()
  cfg.model.update(UNTIED)
  if variant != "vanilla":
    cfg.model.phd.update(variant=variant, num_copies=2, window=2, chunk=4)
  cfg.data.update(source="tokens", token_files=str(tmp_path / "*.npy"), tokenizer=tokenizer)
  cfg.train.update(steps=2, batch_size=2, seq_len=16, val_batches=1, log_every=1,
                   sample_tokens=0)
  return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_glob):
  """(config, workdir) of a tiny PHD run with checkpoints at steps 2 and 4."""
  cfg = tiny_config(corpus_glob, steps=4, checkpoint_every=2, keep_checkpoints=3)
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  train_and_evaluate(cfg, workdir)
  return cfg, workdir


def step_params(workdir, step, cfg) -> dict:
  """The model parameters a run's checkpoint holds at `step`."""
  model_state = nnx.state(nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(0))))
  ckpt = Checkpointer(workdir, keep=1)
  try:
    return nnx.to_pure_dict(ckpt.restore_params(step, model_state))
  finally:
    ckpt.close()


def new_run(cfg, workdir, source):
  cfg = cfg.copy_and_resolve_references()
  cfg.train.init_from = source
  run = start_session(cfg, workdir)
  run.ckpt.close()
  return run


def test_init_from_a_runs_step_takes_its_parameters_and_a_fresh_optimizer(trained, tmp_path,
                                                                          capsys):
  cfg, workdir = trained
  at2, at4 = step_params(workdir, 2, cfg), step_params(workdir, 4, cfg)
  assert not same(at2, at4)  # the steps differ, so taking the right one shows
  for source, want, step in [(f"{workdir}:2", at2, 2), (workdir, at4, 4)]:
    run = new_run(cfg, str(tmp_path / f"from_{step}"), source)
    assert run.start == 0
    assert same(nnx.to_pure_dict(run.state[0]), want)
    assert_fresh_optimizer(run.state[1])
    assert f"initialized the model from {source} (step {step})" in capsys.readouterr().out


def test_a_resumed_run_ignores_init_from(trained, capsys):
  cfg, workdir = trained
  run = new_run(cfg, workdir, "/no/such/weights")  # never read: the run has its own checkpoint
  assert run.start == 4 and same(nnx.to_pure_dict(run.state[0]), step_params(workdir, 4, cfg))
  assert int(nnx.to_pure_dict(run.state[1])["step"]) == 4  # its own optimizer, resumed
  out = capsys.readouterr().out
  assert ("config.train.init_from=/no/such/weights ignored: the run resumes from its own "
          "checkpoint (step 4)") in out


def test_a_mismatched_config_fails_in_one_line_naming_the_field(trained, tmp_path, bpe_path):
  cfg, workdir = trained
  cfg = cfg.copy_and_resolve_references()
  layers = cfg.model.num_layers
  cfg.model.num_layers = layers + 1
  cfg.model.phd.update(variant="vanilla", num_copies=1, window=0, chunk=0)  # allowed to differ
  with pytest.raises(CheckpointMismatchError) as e:
    new_run(cfg, str(tmp_path / "new"), workdir)
  message = str(e.value)
  assert "\n" not in message
  assert f"model.num_layers: weights {layers}, config {layers + 1}" in message
  assert f"--config.model.num_layers={layers}" in message and "variant" not in message
  assert not os.listdir(tmp_path / "new" / "checkpoints")  # nothing saved

  cfg.model.num_layers = layers  # the shapes fit, the tokenizer does not: other ids, other tokens
  cfg.train.init_from, cfg.data.tokenizer = workdir, bpe_path
  _, state = create_state(cfg)
  with pytest.raises(ValueError, match=r"config.data.tokenizer='.*bpe.json' is not the tokenizer "
                                       r"of config.train.init_from=.* \(bytes\)"):
    init_from.initialize(cfg, state, tokenizers.load(bpe_path), None, print)


def test_init_from_an_olmo2_folder_equals_importing_it_first(tmp_path, capsys):
  """The folder read directly, or imported first: the same PHD model, holding OLMo2's weights."""
  folder = olmo2_folder(tmp_path)
  weights = str(tmp_path / "weights")
  assert import_weights(folder, weights) == os.path.join(folder, "tokenizer.json")
  cfg = fixture_config(tmp_path, os.path.join(weights, "tokenizer.json"), variant="phd_cswa")
  tok = tokenizers.from_config(cfg.data)
  want = params_of(load_olmo2(folder, base=cfg.model))
  for source in (folder, weights):
    cfg.train.init_from = source
    _, state = create_state(cfg)
    assert not same(nnx.to_pure_dict(state[0]), want)  # a random model before
    init_from.initialize(cfg, state, tok, None, print)
    assert same(nnx.to_pure_dict(state[0]), want)
    assert_fresh_optimizer(state[1])
  out = capsys.readouterr().out
  assert "model.phd.variant: weights 'vanilla', config 'phd_cswa'" in out  # changed, allowed
  with pytest.raises(ValueError, match="a Hugging Face folder, which has no steps"):
    init_from.open_weights(f"{folder}:3", cfg.model)
  with pytest.raises(ValueError, match=r"has no step 3 \(its steps: \[0\]\)"):
    init_from.open_weights(f"{weights}:3", cfg.model)
  with pytest.raises(ValueError, match="holds neither a run"):
    init_from.open_weights(str(tmp_path), cfg.model)
  cfg.train.init_from = ""
  with pytest.raises(CheckpointMismatchError, match="holds model-only weights .* start a new run "
                                                    "from them with --config.train.init_from="):
    start_session(cfg, weights)  # the weights are no run to resume


def test_a_config_saved_before_init_from_existed_reads_back_as_from_scratch():
  old = default_config().to_dict()
  del old["train"]["init_from"]
  assert upgrade(old).train.init_from == ""


def test_init_from_syntax():
  assert init_from.parse("runs/x") == ("runs/x", None)
  assert init_from.parse("runs/x:200") == ("runs/x", 200)
  assert init_from.parse("gs://b/runs/x:7") == ("gs://b/runs/x", 7)
  assert init_from.parse("gs://b/runs/x") == ("gs://b/runs/x", None)


@pytest.mark.integration
def test_continued_pretraining_from_olmo2_through_the_commands(tmp_path):
  """phd-hf import of transformers' golden OLMo2 -> phd-train from it (first loss: the imported
  model's) -> resumed (init_from ignored) -> phd-hf export gives back the trained weights."""
  folder, weights, run = olmo2_folder(tmp_path), str(tmp_path / "w"), str(tmp_path / "run")
  done = commands.phd("phd-hf", "import", f"--hf_dir={folder}", f"--out={weights}")
  assert f"--config.train.init_from={weights}" in done.stdout
  imported, saved, step = load_run(weights)
  assert step == 0 and saved.data.tokenizer == os.path.join(weights, "tokenizer.json")
  logits = imported(jnp.asarray(GOLDEN["tokens"], jnp.int32))  # transformers' own logits
  assert np.abs(np.asarray(logits) - GOLDEN["olmo2_untied"]).max() \
      <= 1e-5 * np.abs(GOLDEN["olmo2_untied"]).max()
  state = Checkpointer(weights, keep=1)
  assert list(state.manager.item_metadata(0)["state"]) == ["0"]  # the model only, no optimizer
  state.close()
  with pytest.raises(ValueError, match="already holds checkpoints"):
    import_weights(folder, weights)

  cfg = fixture_config(tmp_path, os.path.join(weights, "tokenizer.json"))
  flags = ["--config=configs/base.py", f"--workdir={run}",
           *(f"--config.model.{k}={v}" for k, v in UNTIED.items()),
           *(f"--config.data.{k}={cfg.data[k]}" for k in ("source", "token_files", "tokenizer")),
           *(f"--config.train.{k}={cfg.train[k]}" for k in
             ("batch_size", "seq_len", "val_batches", "log_every", "sample_tokens")),
           f"--config.train.init_from={weights}"]
  trained = commands.phd("phd-train", *flags, "--config.train.steps=2")
  assert f"initialized the model from {weights} (step 0)" in trained.stdout
  rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
  first = next(r["loss"] for r in rows if r["step"] == 1)
  tok = tokenizers.from_config(cfg.data)
  splits = windows.load_splits(cfg.data, tok, cfg.model.vocab_size, cfg.train.seq_len)
  batch = next(iter(windows.train_dataset(splits.train, 16, 2, cfg.data.seed)))
  logits = imported(jnp.asarray(batch["inputs"]))  # the imported model on the first batch
  want = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["targets"][..., None], -1).mean()
  np.testing.assert_allclose(first, float(want), rtol=1e-5)

  resumed = commands.phd("phd-train", *flags, "--config.train.steps=3")
  assert f"resumed from step 2 in {run}" in resumed.stdout
  assert f"config.train.init_from={weights} ignored" in resumed.stdout
  model, _, step = load_run(run)
  assert step == 3 and not same(params_of(model), params_of(imported))  # it trained

  commands.phd("phd-hf", "export", f"--workdir={run}", f"--out={tmp_path / 'hf'}")
  assert same(params_of(load_olmo2(str(tmp_path / "hf"))), params_of(model))
  with open(tmp_path / "hf" / "tokenizer.json") as a, open(f"{folder}/tokenizer.json") as b:
    assert a.read() == b.read()  # the tokenizer travelled: OLMo2 folder -> weights -> run -> HF
