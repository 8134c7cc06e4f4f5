"""Data mixtures: named token sources with weights, and a schedule of new weights.

  config.data.source = "mixture"
  config.data.mixture = {"code": {"path": "data/code", "weight": 3.0},      # a phd-prepare folder
                         "web": {"path": "gs://b/web/*.npy", "weight": 1.0,   # token files made
                                 "dtype": "uint32"}}                          # elsewhere
  config.data.mixture_schedule = ((2000, {"code": 1.0}),)  # from step 2000 on; others unchanged

(`--config.data.mixture.code.weight=2` on the command line.) Each training window comes from
source i with probability weight_i / total weight (phd_jax/data/sampling.py says how, exactly and
deterministically); each source's held-out split is scored on its own. All sources share one
tokenizer: the prepare metadata must agree, and match config.data.tokenizer. A single data source
(`data.source` stdlib, text_files or tokens) is read as a mixture of one, named after it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import NamedTuple

import ml_collections
import numpy as np

from phd_jax import files as fs
from phd_jax.data import sampling, tokens, windows
from phd_jax.data.tokenizers import Tokenizer

FIELDS = ("path", "weight", "dtype")  # of each source


class Spec(NamedTuple):
  names: tuple[str, ...]  # sorted: the config's order (ml_collections sorts keys)
  paths: tuple[str, ...]
  dtypes: tuple[str, ...]
  weights: tuple[float, ...]
  schedule: tuple[tuple[int, tuple[float, ...]], ...]  # (step, every source's weight)

  def as_json(self) -> dict:
    """What a resumed run compares (sampling.MixtureIterator.set_state)."""
    return {"weights": dict(zip(self.names, self.weights)),
            "schedule": [[s, dict(zip(self.names, w))] for s, w in self.schedule]}


def _fail(field: str, value, why: str):
  raise ValueError(f"config.data.{field}={value!r} is invalid: {why}")


def _number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def parse_spec(d: ml_collections.ConfigDict) -> Spec | None:
  """The mixture of `config.data`, checked field by field (no file is read); None when
  data.source is not 'mixture' (data.mixture is then not used). Each error is one line naming
  the source and the field."""
  mix = d.get("mixture") or {}
  schedule = d.get("mixture_schedule") or ()
  if d.source != "mixture":  # left in place, e.g. a mixture config tried on one source
    return None
  if not mix:
    _fail("mixture", _plain(mix), "data.source='mixture' needs at least one source, e.g. "
          "{'code': {'path': 'data/code', 'weight': 1.0}} (configs/mixture.py)")
  names, paths, dtypes, weights = [], [], [], []
  for name in sorted(mix):
    src = mix[name]
    if not isinstance(src, (dict, ml_collections.ConfigDict)):
      _fail(f"mixture.{name}", _plain(src), "expected {'path': ..., 'weight': ...}")
    for key in src:
      if key not in FIELDS:
        _fail(f"mixture.{name}.{key}", src[key], f"not a field of a source (fields: {FIELDS})")
    path, weight, dtype = src.get("path", ""), src.get("weight"), src.get("dtype", "")
    if not isinstance(path, str) or not path.strip():
      _fail(f"mixture.{name}.path", path, "a phd-prepare output folder or a token-file glob")
    if not _number(weight) or weight <= 0:
      _fail(f"mixture.{name}.weight", weight, "expected a positive number")
    if dtype and dtype not in tokens.RAW_DTYPES:
      _fail(f"mixture.{name}.dtype", dtype, f"raw token files' dtype: one of {tokens.RAW_DTYPES}")
    names.append(name)
    paths.append(path.strip())
    dtypes.append(dtype)
    weights.append(float(weight))
  return Spec(tuple(names), tuple(paths), tuple(dtypes), tuple(weights),
              _schedule(schedule, names, weights))


def _schedule(schedule, names: list[str], weights: list[float]):
  """((step, {name: weight}), ...) -> ((step, every source's weight), ...), checked."""
  if not isinstance(schedule, (tuple, list)):
    _fail("mixture_schedule", schedule, "expected ((step, {source: weight}), ...)")
  out, current, last = [], dict(zip(names, weights)), 0
  for i, entry in enumerate(schedule):
    field = f"mixture_schedule[{i}]"
    if (not isinstance(entry, (tuple, list)) or len(entry) != 2
        or not isinstance(entry[1], (dict, ml_collections.ConfigDict))):
      _fail(field, _plain(entry), "expected (step, {source: weight})")
    step, new = entry
    if not isinstance(step, int) or isinstance(step, bool) or step <= last:
      _fail(field, _plain(entry), f"its step must be an int > {last} (steps increase, from 1)")
    for name, w in new.items():
      if name not in current:
        _fail(field, _plain(entry), f"unknown source {name!r} (sources: {', '.join(names)})")
      if not _number(w) or w < 0:
        _fail(f"{field}.{name}", w, "expected a number >= 0")
      current[name] = float(w)
    if not sum(current.values()) > 0:
      _fail(field, _plain(entry), "leaves every source a weight of 0")
    out.append((step, tuple(current[n] for n in names)))
    last = step
  return tuple(out)


def _plain(value):
  """A config value as its user wrote it (ConfigDicts as dicts) for an error message."""
  if isinstance(value, ml_collections.ConfigDict):
    return value.to_dict()
  return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


@dataclasses.dataclass
class Source:
  name: str
  weight: float
  train: object  # grain random-access source of windows (tokens.TokenWindows, windows.Windows)
  val: object
  description: str


@dataclasses.dataclass
class Mixture:
  sources: list[Source]
  spec: Spec
  named: bool  # data.source='mixture': metrics per source; else a plain source, named after it
  description: str
  val: dict[str, list[dict[str, np.ndarray]]]  # per source: host-global validation batches

  def train_iterator(self, batch_size: int, seed: int, host: int = 0,
                     hosts: int = 1) -> sampling.MixtureIterator:
    """This host's slice of every global batch (batch_size: global), endlessly."""
    s = self.spec
    plan = sampling.Plan(s.names, [len(src.train) for src in self.sources], s.weights,
                         s.schedule, batch_size, seed)
    state = {**s.as_json(), "batch_size": batch_size, "seed": seed}
    return sampling.MixtureIterator(plan, [src.train for src in self.sources], host, hosts,
                                    state)


def load(d: ml_collections.ConfigDict, tok: Tokenizer, model_vocab: int, seq_len: int,
         batch_size: int, val_batches: int) -> Mixture:
  """Every source's train and validation windows, checked before anything is built."""
  spec = parse_spec(d)
  if spec is None:  # a single data source: a mixture of one
    splits = windows.load_splits(d, tok, model_vocab, seq_len)
    one = Source(d.source, 1.0, splits.train, splits.val, splits.description)
    unused = (f" (config.data.mixture is not used: data.source={d.source!r})"
              if d.get("mixture") else "")
    return Mixture([one], Spec((d.source,), ("",), ("",), (1.0,), ()), False,
                   splits.description + unused, {d.source: windows.val_batches(
                       splits.val, seq_len, batch_size, val_batches)})
  _check_tokenizers(spec)
  sources = [_load_source(spec, i, d, tok, model_vocab, seq_len) for i in range(len(spec.names))]
  val = {}
  for s in sources:
    with _naming(s.name, spec.paths[spec.names.index(s.name)]):
      val[s.name] = windows.val_batches(s.val, seq_len, batch_size, val_batches)
  total = sum(spec.weights)
  text = "\n".join(f"  {s.name} (weight {s.weight:g}, {s.weight / total:.1%}): {s.description}"
                   for s in sources)
  return Mixture(sources, spec, True, f"mixture of {len(sources)} source(s):\n{text}", val)


class _naming:
  """Errors inside name the source's field: config.data.mixture.NAME.path=... (one line)."""

  def __init__(self, name: str, path: str):
    self.field, self.path = f"config.data.mixture.{name}", path

  def __enter__(self):
    return self

  def __exit__(self, kind, e, tb):
    if kind is None or not issubclass(kind, ValueError):
      return False
    text = str(e)
    for old, new in (("config.data.token_dir", "path"), ("config.data.token_files", "path"),
                     ("config.data.token_dtype", "dtype")):
      text = text.replace(old, f"{self.field}.{new}")
    if self.field not in text:
      text = f"{self.field}.path={self.path!r}: {text}"
    raise ValueError(text) from None


def _metadata(path: str) -> dict | None:
  """A phd-prepare folder's metadata.json (None for token files)."""
  meta = fs.join(path, "metadata.json")
  return json.loads(fs.read_text(meta)) if fs.isdir(path) and fs.isfile(meta) else None


def _check_tokenizers(spec: Spec) -> None:
  """Every source exists, and the prepared ones were made with one tokenizer."""
  first = None
  for name, path in zip(spec.names, spec.paths):
    field = f"config.data.mixture.{name}.path"
    for g in path.split(","):
      fs.check_access(g.strip(), field)
    if fs.isdir(path):
      meta = _metadata(path)
      if meta is None:
        raise ValueError(f"{field}={path!r} is invalid: no metadata.json (not a phd-prepare "
                         "output, or its prepare did not finish: rerun it)")
      t = meta["tokenizer"]
      if first is None:
        first = (name, t)
      elif t["fingerprint"] != first[1]["fingerprint"]:
        a, b = first[1], t
        raise ValueError(
            f"config.data.mixture.{first[0]}.path and {field} hold different tokenizers: "
            f"{a['spec']} (fingerprint {a['fingerprint']}) and {b['spec']} (fingerprint "
            f"{b['fingerprint']}); prepare every source with one tokenizer")
    elif not fs.expand(path):
      raise ValueError(f"{field}={path!r} is invalid: no such folder (a phd-prepare output) "
                       "and no file matches it as a glob")


def _load_source(spec: Spec, i: int, d: ml_collections.ConfigDict, tok: Tokenizer,
                 model_vocab: int, seq_len: int) -> Source:
  name, path = spec.names[i], spec.paths[i]
  with _naming(name, path):
    if fs.isdir(path):
      splits = tokens.from_token_dir(path, tok, model_vocab)
    else:
      sub = ml_collections.ConfigDict({**d.to_dict(), "token_files": path,
                                       "token_dtype": spec.dtypes[i]})
      splits = tokens.from_token_files(sub, tok, model_vocab)
    if not sum(s.tokens for s in splits.val):
      raise ValueError(f"config.data.mixture.{name}.path={path!r} has no validation split (0 "
                       "held-out tokens): prepare it with --val_fraction > 0 (token files: "
                       "raise config.data.val_fraction or add files)")
    return Source(name, spec.weights[i], tokens.TokenWindows(splits.train, seq_len, "train"),
                  tokens.TokenWindows(splits.val, seq_len, "val"), splits.description)
