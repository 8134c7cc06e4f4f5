"""phd-generate: text from a trained run, with the KV-cached decoder.

  phd-generate --workdir=RUN --prompt="def " [--prompt="import "] [--temperature=0]

Restores the latest checkpoint together with the config and tokenizer it was trained with; a
newest step that does not load (damaged files) is named on stderr and the one before used.
"""
from __future__ import annotations

from absl import flags

from phd_jax.cli import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory (holds checkpoints/).")
_PROMPT = flags.DEFINE_multi_string("prompt", ["def "], "Prompt text; repeat for a batch.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate per prompt.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.7, "Sampling temperature; 0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass in (0, 1] (1: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def _main(argv: list[str]) -> None:
  del argv
  # JAX and the library load here, not at import: --help and a missing flag answer at once.
  from phd_jax.checkpoints.load import load_run
  from phd_jax.data import tokenizers
  from phd_jax.inference import decode
  common.libraries_loaded()

  model, cfg, step = load_run(_WORKDIR.value)
  tok = tokenizers.for_run(_WORKDIR.value, cfg)  # the run's own tokenizer, saved at training start
  out, n = decode.generate(model, [tok.encode(p) for p in _PROMPT.value], _MAX_NEW.value,
                           temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                           seed=_SEED.value, eos_id=tok.eos_id)
  print(f"# {_WORKDIR.value}, checkpoint step {step}")
  for prompt, ids, length in zip(_PROMPT.value, out, n):
    print(f"----- prompt {prompt!r} -----\n{prompt}{tok.decode(ids[:length])}")


def main() -> None:
  common.launch(_main, required=["workdir"])


if __name__ == "__main__":
  main()
