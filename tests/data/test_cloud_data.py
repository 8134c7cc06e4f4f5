"""Data in buckets (gs:// and s3:// emulators on 127.0.0.1): token shards read by ranged reads give
the windows local shards give, prepare writes the bytes a local prepare writes and resumes, token
file globs split alike, tokenizers and text files from a bucket are the local ones, and a run
trained from a bucket's token dir has the losses of one trained from local disk."""
import glob
import json
import os
import pickle

import ml_collections
import numpy as np
import pytest

from configs import model_tiny
from phd_jax import files as fs
from phd_jax.data import bpe, prepare, text, tokenizers
from phd_jax.data import tokens as token_data
from phd_jax.data.windows import load_splits
from phd_jax.train.loop import train_and_evaluate
from tests import commands
from tests.helpers import losses, tiny_config

TEXT = "def héllo(x):\n  return x * 2  # ünïcode €\n"
WORDS = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "value", "é€"]


def upload(local_dir, url):
  fs.upload_tree(str(local_dir), url)
  return url


def docs(n, seed=0):
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, size=rng.integers(3, 30))) + f" #{i}" for i in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """jsonl, parquet and text files: every reader of documents.py."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  root = tmp_path_factory.mktemp("cloud_corpus")
  d = docs(120)
  for k in range(3):
    with open(root / f"part{k}.jsonl", "w") as f:
      f.writelines(json.dumps({"text": t}) + "\n" for t in d[k::4])
  pq.write_table(pa.table({"text": d[3::4]}), root / "part3.parquet")
  (root / "doc.txt").write_text("a text file is one document ü")
  return root


@pytest.fixture
def count_reads(monkeypatch):
  """Every fs.read_range call as (path, bytes); whole-file reads of a URL fail the test."""
  calls, real = [], fs.read_range

  def counted(path, start, end):
    calls.append((path, end - start))
    return real(path, start, end)

  def whole(name, real_fn):
    def refuse(path, *a, **k):
      assert not fs.is_url(path), f"{name}({path}): a bucket's shard read whole"
      return real_fn(path, *a, **k)
    return refuse
  monkeypatch.setattr(fs, "read_range", counted)
  for name in ("read_bytes", "open", "local_copy", "copy_file"):
    monkeypatch.setattr(fs, name, whole(name, getattr(fs, name)))
  return calls


def shard_pair(tmp_path, bucket):
  """A raw uint16 .bin and a uint32 .npy (with header), on local disk and in the bucket."""
  os.makedirs(tmp_path / "tok")
  (np.arange(301) % 257).astype("<u2").tofile(tmp_path / "tok" / "a.bin")
  np.save(tmp_path / "tok" / "b.npy", (np.arange(1000, 1210) % 50000).astype(np.uint32))
  upload(tmp_path / "tok", bucket)
  local = [token_data._raw_shard(str(tmp_path / "tok" / "a.bin"), "uint16", "dtype"),
           token_data._npy_shard(str(tmp_path / "tok" / "b.npy"), "")]
  return local, [fs.join(bucket, n) for n in ("a.bin", "b.npy")]


def test_windows_of_a_bucket_are_the_local_ones_by_ranged_reads(bucket, tmp_path, monkeypatch,
                                                                count_reads):
  local, urls = shard_pair(tmp_path, bucket)
  monkeypatch.setattr(token_data, "NPY_HEAD", 16)  # the header takes a second ranged read
  remote = [token_data._raw_shard(urls[0], "uint16", "dtype"), token_data._npy_shard(urls[1], "")]
  assert [s._replace(path="") for s in remote] == [s._replace(path="") for s in local]
  assert remote[1].offset == 128 and remote[1].dtype == "uint32"
  a, b = token_data.TokenWindows(local, 16), token_data.TokenWindows(remote, 16)
  b = pickle.loads(pickle.dumps(b))  # what a grain worker gets: paths and counts, no handle
  count_reads.clear()
  for i in range(len(a)):
    wa, wb = a[i], b[i]
    np.testing.assert_array_equal(wa["inputs"], wb["inputs"])
    np.testing.assert_array_equal(wa["targets"], wb["targets"])
    assert wb["inputs"].dtype == np.int32
  assert b._maps == [None, None]  # no memmap of a URL
  itemsize = {urls[0]: 2, urls[1]: 4}
  assert len(count_reads) == len(a) == 18 + 13  # one ranged read per window, of its bytes only
  assert all(n == 17 * itemsize[p] for p, n in count_reads)


@pytest.mark.parametrize("case, message", [
    ("out_of_range", r"token file gs://.*bad\.bin: id 300 at position 9 is outside the "
                     r"vocabulary \[0, 257\)"),
    ("truncated_npy", r"token file gs://.*bad\.npy: not a whole \.npy array"),
    ("odd_size", r"token file gs://.*bad\.bin: 11 bytes is not a multiple of 2"),
])
def test_bad_token_files_in_a_bucket_are_refused(gs_url, tmp_path, monkeypatch, case, message):
  (np.arange(100) % 256).astype("<u2").tofile(tmp_path / "good.bin")
  if case == "out_of_range":
    np.array([1] * 9 + [300, 2], "<u2").tofile(tmp_path / "bad.bin")
    monkeypatch.setattr(token_data, "SCAN_CHUNK", 4)  # found in the third chunk
  elif case == "truncated_npy":
    np.save(tmp_path / "bad.npy", np.arange(50, dtype=np.uint16))
    with open(tmp_path / "bad.npy", "r+b") as f:
      f.truncate(128 + 60)
  else:
    (tmp_path / "bad.bin").write_bytes(b"\0" * 11)
  url = upload(tmp_path, f"{gs_url}/{tmp_path.name}")
  cfg = model_tiny.get_config()
  cfg.data.update(source="tokens", token_files=f"{url}/*", token_dtype="uint16")
  with pytest.raises(ValueError, match=message):
    load_splits(cfg.data, tokenizers.ByteTokenizer(), 384, 8)


def test_token_file_globs_in_a_bucket_split_like_local(bucket, tmp_path, count_reads):
  os.makedirs(tmp_path / "tok" / "sub")
  for i in range(6):
    (np.arange(i * 40, i * 40 + 200) % 257).astype("<u2").tofile(
        tmp_path / "tok" / ("sub" if i % 2 else "") / f"p{i}.bin")
  url = upload(tmp_path / "tok", bucket)
  got = {}
  for where, root in (("local", str(tmp_path / "tok")), ("bucket", url)):
    d = model_tiny.get_config().data
    d.update(source="tokens", token_files=f"{root}/*.bin,{root}/sub/*.bin", token_dtype="uint16",
             val_fraction=0.3)
    got[where] = load_splits(d, tokenizers.ByteTokenizer(), 384, 16)
  for split in ("train", "val"):
    a, b = getattr(got["local"], split), getattr(got["bucket"], split)
    assert [fs.relpath(s.path, str(tmp_path / "tok")) for s in a.shards] == \
        [fs.relpath(s.path, url) for s in b.shards]
    assert len(a) == len(b) > 0
    for i in range(len(a)):
      np.testing.assert_array_equal(a[i]["inputs"], b[i]["inputs"])


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  import sentencepiece as spm
  root = tmp_path_factory.mktemp("sp")
  lines = [f"def function_{i}(value): return value + {i}" for i in range(300)]
  spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(root / "sp"),
                                 vocab_size=300, model_type="bpe", byte_fallback=True,
                                 minloglevel=2)
  return str(root / "sp.model")


def test_tokenizers_in_a_bucket_are_the_local_ones(bucket, bpe_path, sp_model, corpus_glob):
  for path, kind in ((bpe_path, tokenizers.HFTokenizer),
                     (sp_model, tokenizers.SentencePieceTokenizer)):
    url = fs.join(bucket, "tok", os.path.basename(path))
    fs.copy_file(path, url)
    here, there = tokenizers.load(path), tokenizers.load(url)
    assert isinstance(there, kind) and there.path == url and there.name == here.name
    assert there.fingerprint() == here.fingerprint()  # the content's, not the path's
    assert there.encode(TEXT) == here.encode(TEXT) and there.vocab_size == here.vocab_size
    np.testing.assert_array_equal(there.token_bytes(), here.token_bytes())
    run = fs.join(bucket, f"run_{kind.kind}")  # a workdir in the bucket keeps its own copy
    tokenizers.save_to_run(there, run)
    cfg = ml_collections.ConfigDict({"data": {"tokenizer": "/gone/elsewhere" + path[-6:]}})
    copy = tokenizers.for_run(run, cfg)
    assert copy.path == fs.join(run, tokenizers.RUN_FILES[kind.kind])
    assert copy.fingerprint() == here.fingerprint()
  with pytest.raises(ValueError, match=r"config\.data\.tokenizer=.*is invalid: nothing at"):
    tokenizers.load(fs.join(bucket, "missing.json"))
  trained = fs.join(bucket, "trained.json")  # phd-tokenizer: input globs and output in a bucket
  words = upload(os.path.dirname(corpus_glob), fs.join(bucket, "words"))
  assert bpe.train_from_globs(f"{words}/*.txt", 300, trained) == 12
  assert tokenizers.load(trained).vocab_size > 257


def test_text_files_in_a_bucket_load_like_local(bucket, corpus_glob):
  url = upload(os.path.dirname(corpus_glob), bucket)
  got = []
  for g in (corpus_glob, f"{url}/*.txt"):
    d = model_tiny.get_config().data
    d.update(source="text_files", text_files=g)
    got.append(text.load_corpus(d))
  a, b = got
  np.testing.assert_array_equal(a.train, b.train)
  np.testing.assert_array_equal(a.val, b.val)
  assert (a.train_files, a.val_files, a.fingerprint) == (b.train_files, b.val_files,
                                                         b.fingerprint)


def prepared_bytes(out):
  """{relative path: bytes} of every file a prepare wrote (local or in a bucket)."""
  return {fs.relpath(p, out): fs.read_bytes(p) for p in fs.expand(f"{out}/**")}


def without_paths(meta):
  """metadata.json less the two fields that name where the input was (a glob, a path)."""
  meta = json.loads(json.dumps(meta))
  del meta["input"]["input"], meta["tokenizer"]["spec"]
  return meta


def test_prepare_into_a_bucket_matches_local_and_resumes(bucket, corpus, bpe_path, tmp_path,
                                                         monkeypatch):
  kw = dict(val_fraction=0.2, shard_bytes=3000, progress=False)
  local = prepare.prepare(input=str(corpus / "*"), tokenizer=bpe_path, out=str(tmp_path / "out"),
                          **kw)
  inp, out = upload(corpus, fs.join(bucket, "in")), fs.join(bucket, "out")
  tok = fs.join(bucket, "bpe.json")
  fs.copy_file(bpe_path, tok)
  monkeypatch.chdir(tmp_path)
  meta = prepare.prepare(input=f"{inp}/*", tokenizer=tok, out=out, **kw)
  assert without_paths(meta) == without_paths(local) and len(meta["shards"]["train"]) > 2
  assert meta["input"]["input"] == f"{inp}/*" and meta["tokenizer"]["spec"] == tok
  assert json.loads(fs.read_text(fs.join(out, "metadata.json"))) == meta
  here, there = prepared_bytes(str(tmp_path / "out")), prepared_bytes(out)
  assert sorted(here) == sorted(there)  # shards, parts markers, tokenizer.json, metadata.json
  assert {k: v for k, v in there.items() if k.endswith((".bin", "tokenizer.json"))} == \
      {k: v for k, v in here.items() if k.endswith((".bin", "tokenizer.json"))}
  assert not glob.glob(str(tmp_path / "*:*"))  # nothing local named after the URL
  done = []
  assert prepare.prepare(input=f"{inp}/*", tokenizer=tok, out=out, on_unit=done.append,
                         **kw) == meta
  assert done == []  # every unit finished: the markers and the objects' sizes say so
  # The same size, other bytes: only the object's generation / etag tells it changed.
  fs.write_text(fs.join(inp, "doc.txt"), "a text file is one document ö")
  again = prepare.prepare(input=f"{inp}/*", tokenizer=tok, out=out, on_unit=done.append, **kw)
  assert [m["name"] for m in done] == ["00000"]  # doc.txt's unit alone
  assert again["input_fingerprint"] != meta["input_fingerprint"]


@pytest.mark.integration
def test_prepare_command_writes_to_a_bucket(gs_url, corpus, tmp_path):
  out = f"{gs_url}/{tmp_path.name}/tokens"
  cmd = commands.phd("phd-prepare", f"--input={corpus}/*.jsonl", f"--out={out}",
                     "--num_workers=1", cwd=tmp_path, timeout=120)
  assert f"wrote {out}: train" in cmd.stdout
  assert json.loads(fs.read_text(f"{out}/metadata.json"))["tokenizer"]["name"] == "bytes"
  assert os.listdir(tmp_path) == []  # nothing local: no gs: folder in the working directory


@pytest.mark.integration
def test_training_from_a_bucket_gives_the_local_losses(gs_url, corpus, bpe_path, tmp_path):
  local = str(tmp_path / "tokens")
  prepare.prepare(input=str(corpus / "*.jsonl"), tokenizer=bpe_path, out=local,
                  val_fraction=0.2, progress=False)
  url = upload(local, f"{gs_url}/{tmp_path.name}/tokens")
  runs = {}
  for name, token_dir in (("local", local), ("bucket", url)):
    cfg = tiny_config("", steps=4, val_batches=1)
    cfg.model.num_layers = 1  # the data path is under test: the smallest model compiles fastest
    cfg.data.update(source="tokens", text_files="", token_dir=token_dir,
                    tokenizer=fs.join(token_dir, "tokenizer.json"))
    train_and_evaluate(cfg, str(tmp_path / name))
    runs[name] = losses(tmp_path / name)
  assert sorted(runs["bucket"]) == [1, 2, 3, 4]
  np.testing.assert_allclose([runs["bucket"][s] for s in range(1, 5)],
                             [runs["local"][s] for s in range(1, 5)], rtol=1e-6)
  assert open(tmp_path / "bucket" / "tokenizer.json").read() == open(bpe_path).read()


@pytest.mark.integration
def test_bench_data_measures_a_bucket_beside_local_files(gs_url, tmp_path):
  url = f"{gs_url}/{tmp_path.name}/bench"
  cmd = commands.module("experiments.bench_data", "--shards=2", "--shard_tokens=20000",
                        "--batch_size=1", "--batches=2", f"--bucket={url}", timeout=120)
  rows = {line.split()[0]: line for line in cmd.stdout.splitlines() if line.strip()}
  assert "storage" in rows and "local" in rows and url in rows
  assert f"storage={url} loader_tok_s=" in cmd.stdout and "vs_local=" in cmd.stdout
  assert cmd.stdout.strip().splitlines()[-1].startswith("loader_tok_s=")
  assert fs.expand(f"{url}/**") == []  # its copies are deleted
