"""Argument checks shared by the experiments' commands: a bad value fails like a bad flag would
under a command-line parser, with exit status 2 and a message that names the flag.

Everything else is phd_jax/cli/common.py's convention (absl flags, quiet logs, an expected failure
as one `error:` line), which every command runs under.
"""
from __future__ import annotations

from absl import app, flags


def check(ok: bool, message: str) -> None:
  """A usage error (exit status 2) with `message` unless `ok`; the message names the flag."""
  if not ok:
    raise app.UsageError(message, exitcode=2)


def at_least(flag: flags.FlagHolder, low: int) -> int:
  """An integer flag's value, or a usage error that names the flag when it is below `low`."""
  check(flag.value >= low, f"--{flag.name}={flag.value} must be >= {low}")
  return flag.value


def no_positional(argv: list[str]) -> None:
  """A usage error for words after the flags (absl hands them to main; nothing here takes any)."""
  check(len(argv) <= 1, f"unexpected arguments {argv[1:]}: every setting is a --flag")


def positive_ints(flag: flags.FlagHolder) -> list[int]:
  """A list flag's values as integers >= 1, or a usage error that names the flag."""
  try:
    values = [int(x) for x in flag.value]
  except ValueError:
    values = []
  check(bool(values) and min(values) >= 1,
        f"--{flag.name}={','.join(flag.value)} must be a comma-separated list of integers >= 1")
  return values
