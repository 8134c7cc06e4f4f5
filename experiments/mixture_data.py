"""The sources of the example mixture (configs/mixture.py), prepared offline from files every
Python installation has, with phd-prepare (phd_jax/data/prepare.py):

  code   the standard library's .py files (data.source=stdlib's files: site-packages left out)
  prose  the installed packages' descriptions (their README text, in *.dist-info/METADATA)
  legal  the installed packages' license texts (*.dist-info/LICENSE*, licenses/, COPYING*)

  python -m experiments.mixture_data [--out=data/mixture] [--tokenizer=bytes]

A rerun skips what is done (phd-prepare resumes). The same installation gives the same shards;
another Python version or set of packages gives other ones (each source's input fingerprint is
in its metadata.json and in the training log).
"""
from __future__ import annotations

import os
import sysconfig

from absl import flags

from experiments import cli
from phd_jax import files as fs
from phd_jax.cli import common
from phd_jax.data import prepare, text

_OUT = flags.DEFINE_string("out", "data/mixture", "Folder of the three sources' folders.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "bytes", "phd-prepare's --tokenizer.")
_WORKERS = flags.DEFINE_integer("num_workers", 1, "phd-prepare's --num_workers.")


def source_globs() -> dict[str, tuple[str, float]]:
  """{source: (comma-separated globs, share of documents held out)}."""
  root, files = text.stdlib_files()
  tops = sorted({fs.relpath(f, root).split(os.sep)[0] for f in files})
  code = [os.path.join(root, "*.py")] + [os.path.join(root, t, "**", "*.py") for t in tops
                                         if not t.endswith(".py")]
  site = os.path.join(sysconfig.get_paths()["purelib"], "*.dist-info")
  legal = [os.path.join(site, "LICENSE*"), os.path.join(site, "COPYING*"),
           os.path.join(site, "licenses", "**", "*")]
  return {"code": (",".join(code), 0.02), "prose": (os.path.join(site, "METADATA"), 0.05),
          "legal": (",".join(legal), 0.05)}


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  for name, (globs, held_out) in source_globs().items():
    out = fs.join(_OUT.value, name)
    meta = prepare.prepare(input=globs, tokenizer=_TOKENIZER.value, out=out,
                           val_fraction=held_out, num_workers=_WORKERS.value,
                           shard_bytes=8 << 20, progress=False)
    print(f"{name}: {prepare.report(meta, out)}", flush=True)


if __name__ == "__main__":
  common.run(main)
