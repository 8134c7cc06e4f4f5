"""The one convention of every command: absl flags, required flags marked, orbax's INFO logs
quieted, and an expected failure (a bad flag, config, path or checkpoint) as one `error:` line
on stderr with exit status 1, never a traceback."""
from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence

from absl import app, flags, logging


def launch(main: Callable[[list[str]], None], required: Sequence[str] = (),
        errors: tuple[type[BaseException], ...] = (ValueError,)) -> None:
  """absl's app.run(main) with the conventions above; `errors` are the expected failures."""
  for name in required:
    flags.mark_flag_as_required(name)
  if main.__module__ != "__main__":  # an entry point: --help shows the command's text and flags
    sys.modules["__main__"].__doc__ = sys.modules[main.__module__].__doc__
    for flag in flags.FLAGS.get_flags_for_module(main.__module__):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

  def wrapped(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    try:
      main(argv)
    except errors as e:
      sys.exit(f"error: {e}")

  app.run(wrapped)


def libraries_loaded() -> None:
  """Called by a command once JAX and the library are imported: gc.freeze() moves every object
  alive now (the modules of jax, flax, optax, orbax, grain: they live as long as the process) out
  of the cyclic garbage collector's reach. Tracing allocates objects by the million, and each full
  collection would otherwise walk all of those modules again. A tiny phd-train run: 7.13 s of CPU
  with Python's defaults, 6.59 s with this (`python -m experiments.bench_startup`). Raising the
  collection thresholds as well measured faster alone and slower with two test workers sharing
  the two cores, so they stay at Python's defaults; garbage made later is collected as before.
  """
  gc.freeze()
