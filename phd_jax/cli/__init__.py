"""The commands (phd-train, phd-generate, phd-evaluate, phd-prepare, phd-tokenizer, phd-hf):
flags and `main` only; the work is in the library, which never imports this package."""
