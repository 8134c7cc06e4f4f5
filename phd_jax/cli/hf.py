"""phd-hf: OLMo2 checkpoints in the Hugging Face format, in and out of runs.

  phd-hf import --hf_dir=DIR --config=configs/phd.py --workdir=RUN   (a step-0 checkpoint)
  phd-hf export --workdir=RUN --out=DIR                              (K = 1 runs only)

Import takes the tokenizer from --tokenizer, else from DIR (tokenizer.json or tokenizer.model),
else the config's; one that does not fit the checkpoint's embedding is refused, and it is copied
into the run. Export writes the run's tokenizer and its special-token ids beside the weights,
so transformers' AutoTokenizer and AutoModelForCausalLM load the directory on their own.

Export reads the newest checkpoint that loads (a damaged newer one is named on stderr). Every
directory may be a gs:// or s3:// URL; one out of reach fails before any model is built.
"""
from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from phd_jax import files as fs
from phd_jax.cli import common
from phd_jax.data.tokenizers import for_run
from phd_jax.interop.olmo2 import import_run, save_olmo2
from phd_jax.run.load import load_run

USAGE = ("usage: phd-hf import --hf_dir=DIR --config=CFG --workdir=RUN\n"
         "       phd-hf export --workdir=RUN --out=DIR")
_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "Config for PHD and training fields (import).")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "transformers Olmo2ForCausalLM directory (import).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: written by import, read by export.")
_OUT = flags.DEFINE_string("out", None, "Output directory (export).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Import: the tokenizer (tokenizer.json or "
                                 ".model; default: the one in --hf_dir, else the config's).")


def main(argv: list[str]) -> None:
  command = argv[1] if len(argv) == 2 else None
  if command == "import":
    if not (_HF_DIR.value and _CONFIG.value):
      raise ValueError("import needs --hf_dir, --config and --workdir")
    fs.check_access(_HF_DIR.value, "--hf_dir")
    fs.check_access(_WORKDIR.value, "--workdir", write=True)
    tok = import_run(_HF_DIR.value, _CONFIG.value, _WORKDIR.value, _TOKENIZER.value)
    print(f"imported {_HF_DIR.value} into {_WORKDIR.value} (step 0, tokenizer {tok}); "
          "continue with:\n"
          f"  phd-train --workdir={_WORKDIR.value}")
  elif command == "export":
    if not _OUT.value:
      raise ValueError("export needs --workdir and --out")
    fs.check_access(_OUT.value, "--out", write=True)  # before the checkpoint is read
    model, cfg, step = load_run(_WORKDIR.value)
    save_olmo2(model, _OUT.value, for_run(_WORKDIR.value, cfg), cfg.train.seq_len)
    print(f"exported {_WORKDIR.value} (step {step}) to {_OUT.value} as OLMo2")
  else:
    raise ValueError(USAGE)


def run() -> None:
  common.run(main, required=["workdir"])


if __name__ == "__main__":
  run()
