"""Tokenizes a corpus once, in parallel, into flat token shards that every host reads by window:

  phd-prepare --input='corpus/*.jsonl' --tokenizer=bpe.json --out=data/tok
  phd-prepare --hf_dataset=NAME [--hf_config=C] [--split=train] --tokenizer=T --out=D

Writes DIR/train/NNNNN.bin and DIR/val/NNNNN.bin (raw little-endian ids, uint16 when the vocab
fits, else uint32; every document followed by EOS: the OLMo/nanoGPT memmap format), the tokenizer
file, and DIR/metadata.json. Documents go to val by a hash of their text (duplicates land on the
same side). The input is cut into units (runs of whole files, or row ranges of a dataset) fixed by
the input alone, one shard pair per unit: the bytes do not depend on --num_workers. Each shard is
written under a temporary name and renamed when complete, then a marker in DIR/parts/ records it:
a rerun skips the finished units, and a killed run leaves no partial shard visible.

--out and --input may be `gs://` / `s3://` URLs (phd_jax.files): a shard is written to a local
temporary file and uploaded whole once complete (an object never shows a partial shard), markers
and metadata.json likewise; nothing local is created for a URL. A unit's key holds each input's
stamp (size and mtime locally, size and generation/etag of an object), so a rerun skips a unit
only while its inputs are unchanged.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections import Counter

import numpy as np

from phd_jax import files as fs
from phd_jax.data import documents
from phd_jax.data import tokenizers as toks

FORMAT = "phd_jax.tokens/1"
ENCODE_BATCH = 256  # documents per encode_batch call


def dtype_for(vocab_size: int) -> str:
  return "uint16" if vocab_size <= 2**16 else "uint32"


def plan_units(files: list[str], shard_bytes: int) -> list[list[str]]:
  """Consecutive files grouped until a group holds >= shard_bytes (a big file is its own unit)."""
  units, cur, size = [], [], 0
  for f in files:
    cur.append(f)
    size += fs.size(f)
    if size >= shard_bytes:
      units.append(cur)
      cur, size = [], 0
  return units + ([cur] if cur else [])


_TOKENIZER: dict = {}


def _tokenizer(spec: str) -> toks.Tokenizer:
  if spec not in _TOKENIZER:  # once per worker process
    _TOKENIZER[spec] = toks.load(spec)
  return _TOKENIZER[spec]


def _records(job: dict):
  if "hf" in job:
    name, config, split, start, stop = job["hf"]
    return documents.hf_rows(name, config, split, start, stop, job["text_field"])
  return (doc for f in job["files"] for doc in documents.read(f, job["text_field"]))


def prepare_unit(job: dict) -> dict:
  """Tokenizes one unit into its train/val shards; returns its marker (counts, skips)."""
  tok = _tokenizer(job["tokenizer"])
  dtype = np.dtype(job["dtype"]).newbyteorder("<")
  out, name = job["out"], job["name"]
  paths = {s: fs.join(out, s, name + ".bin") for s in ("train", "val")}
  stats = {s: {"tokens": 0, "documents": 0, "max_id": -1} for s in paths}
  skipped, examples, hasher = Counter(), {}, hashlib.sha256()

  with contextlib.ExitStack() as stack:  # both shards appear only once the unit is complete
    files = {s: stack.enter_context(fs.atomic_open(p, "wb")) for s, p in paths.items()}

    def flush(texts: list[str]) -> None:
      for text, ids in zip(texts, tok.encode_batch(texts)):
        split = "val" if fs.held_out(text, job["val_fraction"]) else "train"
        arr = np.asarray(ids + [tok.eos_id], dtype=np.int64)
        files[split].write(arr.astype(dtype).tobytes())
        st = stats[split]
        st["tokens"] += arr.size
        st["documents"] += 1
        st["max_id"] = max(st["max_id"], int(arr.max()))

    texts = []
    for doc in _records(job):
      if doc.text is None:
        skipped[doc.problem] += 1
        examples.setdefault(doc.problem, doc.where)
        continue
      hasher.update(doc.text.encode("utf-8") + b"\0")
      texts.append(doc.text)
      if len(texts) == ENCODE_BATCH:
        flush(texts)
        texts = []
    if texts:
      flush(texts)
  marker = {"name": name, "key": job["key"], "content_sha256": hasher.hexdigest(),
            "skipped": dict(skipped), "skip_examples": examples,
            **{s: {"file": f"{s}/{name}.bin", **stats[s]} for s in paths}}
  fs.write_text(fs.join(out, "parts", name + ".json"), json.dumps(marker, sort_keys=True))
  return marker


def make_jobs(args: dict, tok: toks.Tokenizer) -> list[dict]:
  """The units of the input; each job's key names what it reads and how (for resume)."""
  common = {"tokenizer": args["tokenizer"], "text_field": args["text_field"],
            "val_fraction": args["val_fraction"], "dtype": dtype_for(tok.vocab_size),
            "out": args["out"]}
  settings = [tok.fingerprint(), args["text_field"], args["val_fraction"], common["dtype"]]
  jobs = []
  if args["hf_dataset"]:
    ds = documents.load_hf(args["hf_dataset"], args["hf_config"], args["split"])
    rows, per = ds.num_rows, args["rows_per_shard"]
    for start in range(0, rows, per):
      hf = (args["hf_dataset"], args["hf_config"], args["split"], start, min(start + per, rows))
      jobs.append({**common, "hf": hf, "key": [*settings, list(hf), ds._fingerprint]})
  else:
    for g in args["input"].split(","):
      fs.check_access(g.strip(), "--input")
    files = fs.expand(args["input"])
    if not files:
      raise ValueError(f"--input={args['input']!r} matches no files")
    for unit in plan_units(files, args["shard_bytes"]):
      stat = [[fs.absolute(f), *fs.stamp(f)] for f in unit]
      jobs.append({**common, "files": unit, "key": [*settings, stat]})
  for i, job in enumerate(jobs):
    job["name"] = f"{i:05d}"
  return jobs


def _done(job: dict) -> dict | None:
  """The marker of a unit finished by an earlier run with the same key, if its shards are whole."""
  try:
    marker = json.loads(fs.read_text(fs.join(job["out"], "parts", job["name"] + ".json")))
  except (OSError, ValueError):
    return None
  if marker.get("key") != json.loads(json.dumps(job["key"])):
    return None
  itemsize = np.dtype(job["dtype"]).itemsize
  for s in ("train", "val"):
    path = fs.join(job["out"], marker[s]["file"])
    if not fs.exists(path) or fs.size(path) != marker[s]["tokens"] * itemsize:
      return None
  return marker


def prepare(input: str = "", tokenizer: str = "bytes", out: str = "", text_field: str = "text",
            val_fraction: float = 0.01, num_workers: int = 1, shard_bytes: int = 256 << 20,
            hf_dataset: str = "", hf_config: str | None = None, split: str = "train",
            rows_per_shard: int = 100_000, progress: bool = True, on_unit=None) -> dict:
  """Runs (or resumes) a prepare; returns the metadata it wrote to OUT/metadata.json."""
  from tqdm import tqdm
  if not out:
    raise ValueError("--out is required")
  if bool(input) == bool(hf_dataset):
    raise ValueError("give exactly one of --input=GLOB and --hf_dataset=NAME")
  if not 0 <= val_fraction < 1:
    raise ValueError(f"--val_fraction={val_fraction} is invalid: must be in [0, 1)")
  fs.check_access(out, "--out", write=True)
  args = dict(input=input, tokenizer=tokenizer, out=fs.absolute(out), text_field=text_field,
              val_fraction=val_fraction, hf_dataset=hf_dataset, hf_config=hf_config,
              split=split, shard_bytes=shard_bytes, rows_per_shard=rows_per_shard)
  tok = toks.load(tokenizer)
  jobs = make_jobs(args, tok)
  for d in ("train", "val", "parts"):
    fs.makedirs(fs.join(args["out"], d))
  _forget_listings(args["out"])
  markers = {j["name"]: m for j in jobs if (m := _done(j)) is not None}
  todo = [j for j in jobs if j["name"] not in markers]
  bar = tqdm(total=len(jobs), initial=len(markers), unit="shard", desc="prepare",
             disable=not progress, file=sys.stderr)
  if num_workers > 1 and len(todo) > 1:
    import multiprocessing as mp  # spawn: safe even when the caller has JAX threads running
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with mp.get_context("spawn").Pool(num_workers) as pool:
      for m in pool.imap_unordered(prepare_unit, todo):
        markers[m["name"]] = m
        bar.update()
        if on_unit:
          on_unit(m)
  else:
    for job in todo:
      markers[job["name"]] = prepare_unit(job)
      bar.update()
      if on_unit:
        on_unit(markers[job["name"]])
  bar.close()
  _forget_listings(args["out"])  # the workers wrote objects this process has not listed
  return _finish(args, tok, jobs, markers)


def _forget_listings(out: str) -> None:
  """Drops the object store client's cached listings of OUT: another process (a worker, an
  earlier run) may have written there since, and a stale listing hides finished shards."""
  if fs.is_url(out):
    fs.filesystem(out).invalidate_cache()


def _finish(args: dict, tok: toks.Tokenizer, jobs: list[dict], markers: dict) -> dict:
  out, ordered = args["out"], [markers[j["name"]] for j in jobs]
  keep = {m[s]["file"] for m in ordered for s in ("train", "val")}
  for stale in fs.expand(fs.join(out, "*", "*.bin*")):  # other inputs' units, killed writes
    if fs.relpath(stale, out) not in keep:
      fs.remove(stale)
  skipped, examples = Counter(), {}
  for m in ordered:
    skipped.update(m["skipped"])
    for k, v in m["skip_examples"].items():
      examples.setdefault(k, v)
  tok_file = None
  if tok.path is not None:
    tok_file = toks.RUN_FILES[tok.kind]
    fs.copy_file(tok.path, fs.join(out, tok_file))
  meta = {
      "format": FORMAT,
      "tokenizer": {"spec": args["tokenizer"], "file": tok_file, "name": tok.name,
                    "fingerprint": tok.fingerprint(), "vocab_size": tok.vocab_size,
                    "eos_id": tok.eos_id},
      "dtype": dtype_for(tok.vocab_size), "byteorder": "little",
      "input": {k: args[k] for k in ("input", "hf_dataset", "hf_config", "split", "text_field",
                                     "val_fraction")},
      "input_fingerprint": hashlib.sha256(
          "".join(m["content_sha256"] for m in ordered).encode()).hexdigest()[:16],
      "shards": {s: [{k: m[s][k] for k in ("file", "tokens", "documents", "max_id")}
                     for m in ordered] for s in ("train", "val")},
      "totals": {s: {k: sum(m[s][k] for m in ordered) for k in ("tokens", "documents")}
                 for s in ("train", "val")},
      "skipped": dict(sorted(skipped.items())), "skip_examples": examples,
  }
  fs.write_text(fs.join(out, "metadata.json"), json.dumps(meta, indent=1, sort_keys=True))
  return meta


def report(meta: dict, out: str) -> str:
  t = meta["totals"]
  lines = [f"wrote {out}: train {t['train']['tokens']:,} tokens / {t['train']['documents']:,} "
           f"documents, val {t['val']['tokens']:,} / {t['val']['documents']:,} "
           f"({len(meta['shards']['train'])} shard pairs, {meta['dtype']}, input fingerprint "
           f"{meta['input_fingerprint']})"]
  for reason, n in meta["skipped"].items():
    lines.append(f"skipped {n} record(s): {reason} (first: {meta['skip_examples'][reason]})")
  if not t["val"]["documents"]:
    lines.append("warning: no document went to val; raise --val_fraction")
  return "\n".join(lines)
