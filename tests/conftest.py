import os

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def corpus_glob(tmp_path_factory):
  """A small deterministic corpus of text files (fast to load, easy to learn)."""
  root = tmp_path_factory.mktemp("corpus")
  rng = np.random.default_rng(0)
  words = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "value"]
  for i in range(12):
    lines = [" ".join(rng.choice(words, size=6)) + ":" for _ in range(200)]
    (root / f"file{i:02d}.txt").write_text("\n".join(lines))
  return str(root / "*.txt")


@pytest.fixture(scope="session")
def bpe_path(tmp_path_factory, corpus_glob):
  """A small byte-level BPE (phd_jax/data/bpe.py) trained on the test corpus: a second or two."""
  import glob

  from phd_jax.data.bpe import train_bpe
  path = str(tmp_path_factory.mktemp("bpe") / "bpe.json")
  train_bpe(sorted(glob.glob(corpus_glob)), vocab_size=320, out=path)
  return path


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
def local_task(tmp_path_factory):
  """A local lm-eval task directory (tests/eval/test_evaluate.py's toy multiple-choice task):
  YAML + JSONL, loaded with --include_path, no network."""
  import json

  from tests.eval.test_evaluate import DOCS, TASK_YAML
  root = tmp_path_factory.mktemp("tasks")
  (root / "toy.jsonl").write_text("\n".join(json.dumps(d) for d in DOCS))
  (root / "toy.yaml").write_text(TASK_YAML.format(data=root / "toy.jsonl"))
  return str(root)


@pytest.fixture(scope="session")
def eval_data_root():
  """The paper's benchmark data and OLMo's tokenizer (phd_jax/eval/eval_data.py): `make test`
  fetches them first (make eval-data); a plain pytest run fetches them here, once."""
  from phd_jax.eval import eval_data
  return eval_data.fetch(log=lambda *_: None)
