"""`python -m phd_jax.generate`, the earlier name of phd-generate (phd_jax/cli/generate.py)."""
from phd_jax.cli.generate import main

if __name__ == "__main__":
  main()
