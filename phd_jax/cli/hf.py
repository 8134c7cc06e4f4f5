"""phd-hf: OLMo2 checkpoints in the Hugging Face format, in and out.

  phd-hf import --hf_dir=DIR --out=WEIGHTS [--config=CFG]   (model-only weights)
  phd-hf export --workdir=RUN --out=DIR                      (K = 1 runs only)

Import writes the weights alone (no optimizer state) with their config and tokenizer; a run
starts from them with a fresh optimizer: phd-train --config=CFG --workdir=RUN
--config.train.init_from=WEIGHTS (which also takes DIR itself). --config gives the fields
config.json does not set (layer layout, dtypes, PHD), default the library's. The tokenizer is
--tokenizer, else DIR's (tokenizer.json or tokenizer.model), else the config's; one that does not
fit the embedding is refused, and it is copied into WEIGHTS. Export writes the run's tokenizer
and its special-token ids beside the weights, so transformers' AutoTokenizer and
AutoModelForCausalLM load the directory on their own.

Export reads the newest checkpoint that loads (a damaged newer one is named on stderr); it also
reads WEIGHTS, as phd-generate and phd-evaluate do. Every directory may be a gs:// or s3:// URL;
one out of reach fails before any model is built.
"""
from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from phd_jax import files as fs
from phd_jax.cli import common

USAGE = ("usage: phd-hf import --hf_dir=DIR --out=WEIGHTS [--config=CFG]\n"
         "       phd-hf export --workdir=RUN --out=DIR")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Import: the fields config.json does not set (layout, dtypes, PHD); "
    "default: the library's defaults.")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "transformers Olmo2ForCausalLM directory (import).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Export: the run (or imported weights) to read.")
_OUT = flags.DEFINE_string("out", None, "Output directory: the weights (import), the Hugging "
                           "Face directory (export).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Import: the tokenizer (tokenizer.json or "
                                 ".model; default: the one in --hf_dir, else the config's).")


def _checked(argv: list[str]) -> str:
  """The subcommand, once its flags and paths are checked: before JAX and the library load, so a
  missing flag or a path out of reach answers at once (2-3 s sooner than after the imports)."""
  command = argv[1] if len(argv) == 2 else None
  if command == "import":
    if _WORKDIR.value and not _OUT.value:
      raise ValueError("phd-hf import writes model-only weights, not a run: give --out=WEIGHTS "
                       "instead of --workdir, then start a run from them with phd-train "
                       "--config=CFG --workdir=RUN --config.train.init_from=WEIGHTS")
    if not (_HF_DIR.value and _OUT.value):
      raise ValueError("import needs --hf_dir and --out")
    fs.check_access(_HF_DIR.value, "--hf_dir")
  elif command == "export":
    if not (_WORKDIR.value and _OUT.value):
      raise ValueError("export needs --workdir and --out")
  else:
    raise ValueError(USAGE)
  fs.check_access(_OUT.value, "--out", write=True)  # export: before the checkpoint is read
  return command


def _main(argv: list[str]) -> None:
  command = _checked(argv)
  from phd_jax.checkpoints.load import load_run
  from phd_jax.data.tokenizers import for_run
  from phd_jax.interop.olmo2 import import_weights, save_olmo2
  common.libraries_loaded()

  if command == "import":
    tok = import_weights(_HF_DIR.value, _OUT.value, _CONFIG.value, _TOKENIZER.value)
    print(f"imported {_HF_DIR.value} into {_OUT.value} (model-only weights, tokenizer {tok}); "
          "start a run from them with:\n"
          f"  phd-train --config=CFG --workdir=RUN --config.train.init_from={_OUT.value}")
  else:
    model, cfg, step = load_run(_WORKDIR.value)
    save_olmo2(model, _OUT.value, for_run(_WORKDIR.value, cfg), cfg.train.seq_len)
    print(f"exported {_WORKDIR.value} (step {step}) to {_OUT.value} as OLMo2")


def main() -> None:
  common.launch(_main)  # which flags: by subcommand, checked in main


if __name__ == "__main__":
  main()
