"""`python -m phd_jax.tokenizer`, the earlier name of phd-tokenizer (phd_jax/cli/tokenizer.py)."""
from phd_jax.cli.tokenizer import main

if __name__ == "__main__":
  main()
