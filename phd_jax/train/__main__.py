"""`python -m phd_jax.train`, the earlier name of phd-train (phd_jax/cli/train.py)."""
from phd_jax.cli.train import main

main()
