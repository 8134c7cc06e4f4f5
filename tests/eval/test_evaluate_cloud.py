"""phd-evaluate with its results on a bucket (gs:// and s3:// emulators, tests/storage.py): the
JSON lands whole in the bucket, a bucket out of reach fails before the model loads, and lm-eval's
--include_path is refused as a URL (lm-eval reads local YAMLs only)."""
import json
import os

import numpy as np
import pytest
from flax import nnx

from configs import model_tiny
from phd_jax import files as fs
from phd_jax.eval import results as eval_results
from phd_jax.eval import tasks as eval_tasks
from phd_jax.interop.olmo2 import import_weights, save_olmo2
from phd_jax.model.transformer import Transformer
from tests import commands
from tests.helpers import DOCS, brute_force_accuracy

SEQ_LEN = 64


@pytest.fixture(scope="module")
def vanilla_run(tmp_path_factory):
  """A random tiny vanilla model at step 0, imported as model-only weights (no training), which
  phd-evaluate reads as it reads a run."""
  root = tmp_path_factory.mktemp("vanilla_run")
  cfg = model_tiny.get_config("vanilla")
  cfg.model.init_std = 0.3  # far from uniform logits, so the accuracies mean something
  cfg.train.seq_len = SEQ_LEN
  model = Transformer(cfg.model, rngs=nnx.Rngs(5))
  save_olmo2(model, str(root / "hf"))
  import_weights(str(root / "hf"), str(root / "run"), cfg)
  return str(root / "run"), model


def evaluate(*args, cwd):
  return commands.phd("phd-evaluate", *args, cwd=cwd, expect=None)


@pytest.mark.integration
def test_evaluate_writes_its_results_to_a_bucket(gs_url, vanilla_run, local_task, tmp_path):
  workdir, model = vanilla_run
  out = f"{gs_url}/{tmp_path.name}/eval/results.json"
  p = evaluate(f"--workdir={workdir}", "--tasks=toy_mc", f"--include_path={local_task}",
               "--batch_size=4", f"--out={out}", cwd=tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]
  assert f"results written to {out}" in p.stdout
  got = json.loads(fs.read_text(out))["results"]["toy_mc"]
  acc, acc_norm, _ = brute_force_accuracy(model, SEQ_LEN)
  assert got["acc,none"] == pytest.approx(acc) and got["acc_norm,none"] == pytest.approx(acc_norm)
  assert got["sample_len"] == len(DOCS)
  assert os.listdir(tmp_path) == []  # no `gs:` folder in the working directory


def test_write_json_uploads_lm_evals_output_whole(bucket):
  results = {"results": {"t": {"acc,none": np.float32(0.5)}}, "config": {"f": len}}
  path = fs.join(bucket, "sub", "results.json")
  eval_results.write_json(path, results)
  got = json.loads(fs.read_text(path))
  assert got["results"] == {"t": {"acc,none": 0.5}} and isinstance(got["config"]["f"], str)
  assert fs.listdir(fs.join(bucket, "sub")) == ["results.json"]  # no temporary left beside it


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_evaluate_fails_fast_on_a_missing_out_bucket(scheme, request, tmp_path):
  request.getfixturevalue(f"{scheme}_url")  # the emulator, reachable, without that bucket
  out = f"{scheme}://no-such-bucket/r.json"
  p = evaluate(f"--workdir={tmp_path / 'no_run'}", "--tasks=toy_mc", f"--out={out}",
               cwd=tmp_path)  # the workdir would fail too, later: --out is checked first
  errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
  assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
  assert len(errors) == 1 and errors[0].startswith(f"error: --out={out}"), p.stderr[-2000:]
  assert f"{scheme}://no-such-bucket does not exist" in errors[0]
  assert os.listdir(tmp_path) == []


def test_include_path_must_be_a_local_folder():
  with pytest.raises(ValueError, match=r"--include_path=gs://b/tasks: .*local folder only"):
    eval_tasks.resolve_tasks(["toy_mc"], "gs://b/tasks")
