"""`python -m phd_jax.evaluate`, the earlier name of phd-evaluate (phd_jax/cli/evaluate.py)."""
from phd_jax.cli.evaluate import main

if __name__ == "__main__":
  main()
