"""The test session: the CPU, one compilation cache, things built once and shared by the workers.

- JAX runs on the CPU unless JAX_PLATFORMS says otherwise.
- JAX's persistent compilation cache: a temporary folder made by the controller process
  (pytest_configure) and named in the environment, so the pytest-xdist workers and every
  subprocess they start (phd-* commands, multi-device workers) compile each program once per
  session: the same tiny model is built in many tests. Set JAX_COMPILATION_CACHE_DIR yourself to
  keep a cache across sessions (it is then left alone and never deleted).
- XLA's CPU code generation at its cheapest (FAST_COMPILE, added to XLA_FLAGS for the workers and
  every subprocess): the tests compile far more than they run. A tiny model's gradient compiles
  about 4x faster, and runs about 2x slower; what XLA computes is the same (the flags choose LLVM
  optimisations and how fused loops are emitted, not the HLO program). Tests train for a few
  steps each, so the slower code costs less than it saves.
- Python's garbage collector as the phd-* commands set it (pytest_collection_finish): the
  imported libraries frozen out of its reach, since tracing makes it run very often.
- The corpus, the BPE tokenizer and the trained runs that tests only read are built once per
  session for all workers (tests/shared.py: a folder per thing, a file lock, a done marker).
"""
import os
import shutil
import tempfile

import numpy as np
import pytest

from tests import shared
from tests.shared import FAST_COMPILE

LONG_FIRST = (  # node id prefixes, longest first (as measured with -n 2)
    "tests/train/test_scaling.py::test_eight_devices_match_one",
    "tests/experiments/test_bench_device.py::test_quick_run",  # slow: make test-all only
    "tests/train/test_pod_recipe.py",
    "tests/train/test_scaling.py::test_node_local_tier_on_two_hosts",
    "tests/test_notebook.py",
    "tests/train/test_wandb.py::test_kill_9",
    "tests/eval/test_paper_suite.py::test_paper_suite_offline_from_the_command_line_and_during_",
    "tests/interop/test_init_from.py::test_continued_pretraining_from_olmo2_through_the_commands",
    "tests/train/test_scaling.py::test_two_processes_match_one",
    "tests/data/test_mixture_training.py::test_kill_9",
    "tests/checkpoints/test_checkpoint_tiers.py::test_kill_9",
    "tests/train/test_goodput.py::test_kill_9",
    "tests/configs/test_configs.py",
    "tests/train/test_ops.py::test_sigterm_saves_exits_0_and_rerun_matches_uninterrupted",
    "tests/checkpoints/test_checkpoint_recovery.py::test_a_save_failing_for_storage_ends_with_one_",
    "tests/pallas_kernels/test_phd_flash.py::test_model_with_pallas_equals_xla",
    "tests/model/test_transformer.py::test_xla_and_dense_models_agree",
    "tests/experiments/test_experiments.py::test_sweep_trains_writes_outputs_and_resumes",
    "tests/train/test_scaling.py::test_sigterm_on_one_host_stops_both_at_one_step",
    "tests/model/test_losses.py::test_z_loss_adds_its_term",
    "tests/model/test_transformer.py::test_scan_and_remat_match_the_layer_loop",
    "tests/eval/test_evaluate.py::test_a_fresh_run_evaluates_in_training_and_from_the_command_",
)
CACHE_ENV = {  # every program, however small or quick to compile, is cached
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def pytest_configure(config):
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if hasattr(config, "workerinput"):
    return  # a worker inherits the controller's environment
  os.environ["XLA_FLAGS"] = f"{FAST_COMPILE} {os.environ.get('XLA_FLAGS', '')}".strip()
  if "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return  # a user's cache is theirs
  folder = tempfile.mkdtemp(prefix="phd_jax_test_jit_")
  config._phd_jax_jit_cache = folder
  os.environ.update(JAX_COMPILATION_CACHE_DIR=folder, **CACHE_ENV)


def pytest_collection_modifyitems(config, items):
  """The longest tests first (the rest keep pytest's order), so that with -n 2 no worker is left
  running a two-minute test alone at the end."""
  rank = lambda item: next((i for i, p in enumerate(LONG_FIRST) if item.nodeid.startswith(p)),
                           len(LONG_FIRST))
  items.sort(key=rank)  # stable


def pytest_collection_finish(session):
  """Every test module (and with them JAX and the library) is imported: the garbage collector
  set as the phd-* commands set it (phd_jax/cli/common.py). Measured on five test files (train,
  commands, decode, checkpoint recovery, mixture training) with -n 2, twice each way, alternately:
  275 s of CPU without the freeze (here and in the commands), 262 s with it."""
  from phd_jax.cli.common import libraries_loaded
  libraries_loaded()


def pytest_unconfigure(config):
  folder = getattr(config, "_phd_jax_jit_cache", None)
  if folder:
    shutil.rmtree(folder, ignore_errors=True)
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory):
  """The session's folder for what every worker shares: beside the workers' own basetemps."""
  base = tmp_path_factory.getbasetemp()
  root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
  root.mkdir(exist_ok=True)
  return root


def _write_corpus(folder):
  rng = np.random.default_rng(0)
  words = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "value"]
  for i in range(12):
    lines = [" ".join(rng.choice(words, size=6)) + ":" for _ in range(200)]
    (folder / f"file{i:02d}.txt").write_text("\n".join(lines))


@pytest.fixture(scope="session")
def corpus_glob(shared_root):
  """A small deterministic corpus of text files (fast to load, easy to learn)."""
  return str(shared.built_once(shared_root, "corpus", _write_corpus) / "*.txt")


@pytest.fixture(scope="session")
def bpe_path(shared_root, corpus_glob):
  """A small byte-level BPE (phd_jax/data/bpe.py) trained on the test corpus: a second or two."""
  import glob

  from phd_jax.data.bpe import train_bpe

  def train(folder):
    train_bpe(sorted(glob.glob(corpus_glob)), vocab_size=320, out=str(folder / "bpe.json"))
  return str(shared.built_once(shared_root, "bpe", train) / "bpe.json")


@pytest.fixture(scope="session")
def trained_runs(shared_root):
  """trained_runs(cfg) -> the workdir of cfg trained once for the whole session (all workers).
  Read it only; shared.copy_run gives a copy to resume, damage or extend."""
  return shared.TrainedRuns(shared_root)


@pytest.fixture(scope="session")
def gs_url():
  """A prefix in a GCS emulator's bucket, selected by STORAGE_EMULATOR_HOST (tests/storage.py)."""
  from tests import storage
  with storage.gcs_emulator() as host, storage.environ(STORAGE_EMULATOR_HOST=host):
    from phd_jax import files
    files.configure_clients()
    yield f"gs://{storage.BUCKET}"


@pytest.fixture(scope="session")
def s3_url():
  """A prefix in a moto S3 server's bucket, selected by AWS_ENDPOINT_URL (tests/storage.py)."""
  from tests import storage
  with storage.s3_emulator() as endpoint, storage.environ(AWS_ENDPOINT_URL=endpoint):
    from phd_jax import files
    files.configure_clients()
    yield f"s3://{storage.BUCKET}"


@pytest.fixture(params=["gs", "s3"])
def bucket(request, tmp_path):
  """A fresh prefix on each object store in turn: gs://phd-test/<n>, s3://phd-test/<n>."""
  root = request.getfixturevalue(f"{request.param}_url")
  return f"{root}/{tmp_path.name}"


@pytest.fixture(scope="session")
def local_task(shared_root):
  """A local lm-eval task directory (the toy multiple-choice task of tests/helpers.py): YAML +
  JSONL, loaded with --include_path, no network."""
  import json

  from tests.helpers import DOCS, TASK_YAML

  def write(root):
    (root / "toy.jsonl").write_text("\n".join(json.dumps(d) for d in DOCS))
    (root / "toy.yaml").write_text(TASK_YAML.format(data=root / "toy.jsonl"))
  return str(shared.built_once(shared_root, "tasks", write))


@pytest.fixture(scope="session")
def eval_data_root():
  """The paper's benchmark data and OLMo's tokenizer (phd_jax/eval/eval_data.py): `make test`
  fetches them first (make eval-data); a plain pytest run fetches them here, once."""
  from phd_jax.eval import eval_data
  return eval_data.fetch(log=lambda *_: None)
