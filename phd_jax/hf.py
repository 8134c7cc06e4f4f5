"""`python -m phd_jax.hf`, the earlier name of phd-hf (phd_jax/cli/hf.py)."""
from phd_jax.cli.hf import main

if __name__ == "__main__":
  main()
