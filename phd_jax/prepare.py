"""`python -m phd_jax.prepare`, the earlier name of phd-prepare (phd_jax/cli/prepare.py)."""
from phd_jax.cli.prepare import main

if __name__ == "__main__":
  main()
