"""Subprocesses, one way: the installed `phd-*` commands as a user runs them, `python -m` for the
experiments' scripts and the earlier command names, and helper scripts of the tests.

Every run has a timeout, captures its output and, unless told otherwise, fails the test with the
command line and the tail of its stderr when the exit code is not the expected one. The child's
environment is the test process's (so the session's compilation cache and any emulator variables
reach it) plus this checkout first on PYTHONPATH (the `phd-*` scripts, installed from whichever
checkout made the venv, then import this one's phd_jax) and the Hugging Face hub offline (the
tests never download).
"""
from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import OFFLINE, ROOT

BIN = os.path.dirname(sys.executable)  # the venv's bin: where pip put the phd-* scripts


def environment(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
  """`base` (default: this process's environment) with this checkout first on PYTHONPATH; an
  XLA_FLAGS in `extra` (a device count) is added to base's (the session's code generation)."""
  base = os.environ if base is None else base
  path = os.pathsep.join(p for p in (ROOT, base.get("PYTHONPATH", "")) if p)
  if "XLA_FLAGS" in extra:
    extra["XLA_FLAGS"] = f"{base.get('XLA_FLAGS', '')} {extra['XLA_FLAGS']}".strip()
  return {**base, **OFFLINE, "PYTHONPATH": path, **extra}


def run(argv: list[str], *, expect: int | None = 0, cwd=ROOT, timeout: float = 300,
        env: dict[str, str] | None = None,
        clean_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
  """Runs `argv` to the end. expect: the exit code the test requires (None: the caller checks).
  env: variables added to this process's environment; clean_env: the whole environment instead
  (for tests of what the child finds, or changes, in its environment)."""
  try:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=environment(clean_env, **(env or {})))
  except subprocess.TimeoutExpired as e:
    raise AssertionError(f"{_shown(argv)} ran past {timeout} s; stderr ends:\n"
                         f"{_tail(e.stderr)}") from None
  if expect is not None and done.returncode != expect:
    raise AssertionError(f"{_shown(argv)} exited {done.returncode}, expected {expect}; stderr "
                         f"ends:\n{_tail(done.stderr)}\nstdout ends:\n{_tail(done.stdout, 1000)}")
  return done


def installed(command: str) -> str:
  """The path of an installed command (phd-train, ...) in this interpreter's venv."""
  assert command.startswith("phd-"), command
  return os.path.join(BIN, command)


def phd(command: str, *args, **kw) -> subprocess.CompletedProcess:
  """An installed command: phd("phd-train", "--config=...", ...)."""
  return run([installed(command), *args], **kw)


def module(name: str, *args, **kw) -> subprocess.CompletedProcess:
  """`python -m name args`: the experiments' scripts, and the earlier command names."""
  return run([sys.executable, "-m", name, *args], **kw)


def python(code: str, *args, **kw) -> subprocess.CompletedProcess:
  """`python -c code args`: a snippet in a fresh interpreter."""
  return run([sys.executable, "-c", code, *args], **kw)


def script(path: str, *args, **kw) -> subprocess.CompletedProcess:
  """A Python file run as a program (a worker that must start JAX with its own flags)."""
  return run([sys.executable, path, *args], **kw)


def start(argv: list[str], *, cwd=ROOT, env: dict[str, str] | None = None) -> subprocess.Popen:
  """`argv` started in the background, its stdout and stderr piped as text (the caller waits)."""
  return subprocess.Popen([str(a) for a in argv], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=environment(**(env or {})))


def _shown(argv: list[str]) -> str:
  return " ".join(str(a) for a in argv)[:500]


def _tail(text: str | bytes | None, n: int = 3000) -> str:
  if isinstance(text, bytes):
    text = text.decode(errors="replace")
  return (text or "")[-n:]
