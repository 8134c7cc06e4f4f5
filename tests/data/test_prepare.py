"""prepare: round trip, determinism, resume after a kill, every kind of bad input reported."""
import glob
import json
import os

import numpy as np
import pytest

from phd_jax import files
from phd_jax.data import prepare, tokenizers
from tests import commands

WORDS = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "value", "é€"]


def texts(n, seed=0):
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, size=rng.integers(3, 40))) + f" #{i}" for i in range(n)]


@pytest.fixture
def corpus(tmp_path):
  """Three jsonl files, two text files, one parquet file; returns (dir, every document)."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  root = tmp_path / "in"
  root.mkdir()
  docs = texts(160)
  for k in range(3):
    with open(root / f"part{k}.jsonl", "w") as f:
      f.writelines(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(docs[k::4]))
  pq.write_table(pa.table({"text": docs[3::4]}), root / "part3.parquet")
  extra = ["first text file\nwith two lines", "second one ü"]
  for k, t in enumerate(extra):
    (root / f"doc{k}.txt").write_text(t)
  return root, docs + extra


def read_docs(out):
  """Every document of a prepared dir, decoded: shards split at EOS."""
  meta = json.load(open(os.path.join(out, "metadata.json")))
  tok = tokenizers.load(os.path.join(out, meta["tokenizer"]["file"]))
  docs = []
  for split in ("train", "val"):
    for shard in meta["shards"][split]:
      ids = np.fromfile(os.path.join(out, shard["file"]),
                        dtype=np.dtype(meta["dtype"]).newbyteorder("<"))
      assert ids.size == shard["tokens"] and (ids.size == 0 or ids[-1] == tok.eos_id)
      cuts = np.flatnonzero(ids == tok.eos_id)
      docs += [tok.decode(d) for d in np.split(ids, cuts + 1)[:-1]]
      assert len(cuts) == shard["documents"]
  return meta, docs


def shard_bytes(out):
  return {os.path.relpath(p, out): open(p, "rb").read()
          for p in sorted(glob.glob(os.path.join(out, "*", "*.bin")))}


def test_round_trip(corpus, bpe_path, tmp_path):
  root, docs = corpus
  meta = prepare.prepare(input=str(root / "*"), tokenizer=bpe_path, out=str(tmp_path / "out"),
                         val_fraction=0.2, shard_bytes=4000, progress=False)
  got_meta, got = read_docs(tmp_path / "out")
  assert sorted(got) == sorted(docs)
  assert meta == got_meta and meta["dtype"] == "uint16" and not meta["skipped"]
  assert len(meta["shards"]["train"]) > 2  # several units
  assert meta["totals"]["val"]["documents"] > 0 and meta["totals"]["train"]["documents"] > 0
  for split in ("train", "val"):  # the split follows each document's hash
    n = sum(files.held_out(t, 0.2) == (split == "val") for t in docs)
    assert meta["totals"][split]["documents"] == n


def test_deterministic_with_any_worker_count(corpus, bpe_path, tmp_path):
  root, _ = corpus
  kw = dict(input=str(root / "*"), tokenizer=bpe_path, val_fraction=0.2, shard_bytes=4000,
            progress=False)
  a = prepare.prepare(out=str(tmp_path / "a"), num_workers=1, **kw)
  b = prepare.prepare(out=str(tmp_path / "b"), num_workers=2, **kw)
  assert a == b and shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
  assert open(tmp_path / "a" / "metadata.json").read() == open(tmp_path / "b" /
                                                               "metadata.json").read()


class Killed(Exception):
  pass


def test_a_killed_run_resumes_to_identical_shards(corpus, bpe_path, tmp_path, monkeypatch):
  root, _ = corpus
  kw = dict(input=str(root / "*"), tokenizer=bpe_path, val_fraction=0.2, shard_bytes=4000,
            progress=False)
  clean = prepare.prepare(out=str(tmp_path / "clean"), **kw)
  units = len(clean["shards"]["train"])
  tok = prepare._tokenizer(bpe_path)
  real, calls = tok.encode_batch, []
  first_unit = sum(clean["shards"][s][0]["documents"] for s in ("train", "val"))
  kill_at = -(-first_unit // 16) + 2  # encode calls of unit 0, and one more of unit 1

  def dies_in_unit_1(batch):  # killed mid-write: unit 1 has written part of its tokens
    calls.append(len(batch))
    if len(calls) == kill_at:
      raise Killed
    return real(batch)
  monkeypatch.setattr(tok, "encode_batch", dies_in_unit_1)
  monkeypatch.setattr(prepare, "ENCODE_BATCH", 16)  # several encode calls per unit
  with pytest.raises(Killed):
    prepare.prepare(out=str(tmp_path / "resumed"), **kw)
  out = tmp_path / "resumed"
  visible = sorted(os.path.relpath(p, out) for p in glob.glob(str(out / "*" / "*.bin")))
  assert visible == ["train/00000.bin", "val/00000.bin"]  # only the finished unit
  partial = glob.glob(str(out / "*" / "00001.bin.tmp"))  # the partial one stays hidden
  assert partial and sum(os.path.getsize(p) for p in partial) > 0
  assert not os.path.exists(out / "metadata.json")  # readers refuse an unfinished prepare
  monkeypatch.setattr(tok, "encode_batch", real)
  done = []
  again = prepare.prepare(out=str(out), on_unit=done.append, **kw)
  assert len(done) == units - 1  # the finished unit was skipped
  assert again == clean and shard_bytes(out) == shard_bytes(tmp_path / "clean")
  assert not glob.glob(str(out / "*" / "*.tmp"))


def test_bad_records_are_counted_and_named(tmp_path, bpe_path):
  (tmp_path / "a.jsonl").write_bytes(
      b'{"text": "good one"}\n{"body": "no text field"}\n{"text": ""}\nnot json\n'
      b'{"text": "bad \xff byte"}\n\n{"text": 7}\n{"text": "good two"}\n')
  (tmp_path / "b.txt").write_bytes(b"caf\xe9 in latin-1")
  (tmp_path / "c.txt").write_text("   \n")
  meta = prepare.prepare(input=str(tmp_path / "*.*"), tokenizer=bpe_path,
                         out=str(tmp_path / "out"), progress=False)
  assert meta["totals"]["train"]["documents"] + meta["totals"]["val"]["documents"] == 2
  assert meta["skipped"]["undecodable UTF-8"] == 2  # a.jsonl:5 and b.txt
  report = prepare.report(meta, "out")
  for expected in [
      f"skipped 1 record(s): no field 'text' (first: {tmp_path}/a.jsonl:2)",
      f"skipped 2 record(s): empty document (first: {tmp_path}/a.jsonl:3)",
      f"skipped 1 record(s): invalid JSON (first: {tmp_path}/a.jsonl:4: Expecting value)",
      f"skipped 2 record(s): undecodable UTF-8 (first: {tmp_path}/a.jsonl:5, byte 14: invalid "
      "start byte)",
      f"skipped 1 record(s): text field is int, not a string (first: {tmp_path}/a.jsonl:7)"]:
    assert expected in report, report


@pytest.mark.integration
def test_empty_glob_and_missing_column_are_errors(tmp_path, bpe_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  with pytest.raises(ValueError, match=r"--input='.*nothing/\*.jsonl' matches no files"):
    prepare.prepare(input=str(tmp_path / "nothing" / "*.jsonl"), out=str(tmp_path / "o"))
  pq.write_table(pa.table({"content": ["x"]}), tmp_path / "p.parquet")
  with pytest.raises(ValueError, match=r"p\.parquet: no column 'text'.*--text_field"):
    prepare.prepare(input=str(tmp_path / "p.parquet"), out=str(tmp_path / "o"), progress=False)
  cli = commands.phd("phd-prepare", f"--input={tmp_path}/x*.jsonl", f"--out={tmp_path / 'o'}",
                     timeout=120, expect=1)
  assert "error: --input=" in cli.stderr and "Traceback" not in cli.stderr


def test_hf_dataset_from_a_local_folder(tmp_path, bpe_path, monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
  (tmp_path / "ds").mkdir()
  docs = texts(50, seed=1)
  with open(tmp_path / "ds" / "train.jsonl", "w") as f:
    f.writelines(json.dumps({"text": t}) + "\n" for t in docs)
  meta = prepare.prepare(hf_dataset=str(tmp_path / "ds"), tokenizer=bpe_path, rows_per_shard=20,
                         out=str(tmp_path / "out"), val_fraction=0.2, progress=False)
  assert len(meta["shards"]["train"]) == 3
  assert sorted(read_docs(tmp_path / "out")[1]) == sorted(docs)
