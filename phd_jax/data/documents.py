"""Documents out of corpus files, for phd-prepare: one bad record never stops a run.

Formats, by extension: `.jsonl`/`.json` (one JSON object per line, its `text_field`), `.parquet`
(the `text_field` column), anything else: the whole file is one UTF-8 document. Each record comes
back as `Doc(where, text, problem)`: `where` names the file and line/row; a record that cannot be
used has `text=None` and a `problem` that prepare counts and reports. Paths may be `gs://` /
`s3://` URLs (phd_jax.files): jsonl and parquet files are streamed, never downloaded whole first.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import NamedTuple

from phd_jax import files as fs


class Doc(NamedTuple):
  where: str  # "path:line" / "path:row N" / "path", and for a problem its detail
  text: str | None
  problem: str | None = None  # why the record was skipped: a short reason, the same for alike ones


class InputError(ValueError):
  """Input that no record-level skip can work around (e.g. a parquet file without the column)."""


def file_format(path: str) -> str:
  if path.endswith((".jsonl", ".json")):
    return "jsonl"
  return "parquet" if path.endswith(".parquet") else "text"


def _checked(where: str, text) -> Doc:
  if not isinstance(text, str):
    return Doc(where, None, f"text field is {type(text).__name__}, not a string")
  if not text.strip():
    return Doc(where, None, "empty document")
  return Doc(where, text)


def _jsonl(path: str, field: str) -> Iterator[Doc]:
  with fs.open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      where = f"{path}:{n}"
      if not raw.strip():
        continue  # blank lines separate nothing in jsonl; not a document
      try:
        record = json.loads(raw.decode("utf-8"))
      except UnicodeDecodeError as e:
        yield Doc(f"{where}, byte {e.start}: {e.reason}", None, "undecodable UTF-8")
        continue
      except json.JSONDecodeError as e:
        yield Doc(f"{where}: {e.msg}", None, "invalid JSON")
        continue
      if not isinstance(record, dict) or field not in record:
        yield Doc(where, None, f"no field {field!r}")
        continue
      yield _checked(where, record[field])


def _parquet(path: str, field: str) -> Iterator[Doc]:
  import pyarrow.parquet as pq
  with (fs.open(path, "rb") if fs.is_url(path) else contextlib.nullcontext(path)) as source:
    pf = pq.ParquetFile(source)  # a URL: a seekable stream, so only the needed ranges are read
    if field not in pf.schema_arrow.names:
      raise InputError(f"{path}: no column {field!r} (columns: {pf.schema_arrow.names}); "
                       "set --text_field")
    row = 0
    for batch in pf.iter_batches(columns=[field], batch_size=4096):
      for text in batch.column(0).to_pylist():
        yield _checked(f"{path}:row {row}", text)
        row += 1


def _text(path: str) -> Iterator[Doc]:
  raw = fs.read_bytes(path)
  try:
    yield _checked(path, raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    yield Doc(f"{path}, byte {e.start}: {e.reason}", None, "undecodable UTF-8")


def read(path: str, text_field: str = "text") -> Iterator[Doc]:
  fmt = file_format(path)
  if fmt == "jsonl":
    return _jsonl(path, text_field)
  return _parquet(path, text_field) if fmt == "parquet" else _text(path)


def hf_rows(name: str, config: str | None, split: str, start: int, stop: int,
            field: str) -> Iterator[Doc]:
  """Rows [start, stop) of a `datasets` dataset (a hub name, or a local folder of json/parquet)."""
  ds = load_hf(name, config, split)
  if field not in ds.column_names:
    raise InputError(f"--hf_dataset={name}: no column {field!r} (columns: {ds.column_names}); "
                     "set --text_field")
  for i, text in enumerate(ds.select(range(start, stop))[field], start):
    yield _checked(f"{name}[{split}]:row {i}", text)


def load_hf(name: str, config: str | None, split: str):
  import datasets
  datasets.disable_progress_bars()
  return datasets.load_dataset(name, config, split=split)
