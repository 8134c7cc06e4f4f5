"""Orbax's background echoes of a failed restore: logged while the restore is still running (a
read fails on one thread before the failure reaches the caller), they are held, then dropped if
the restore fails and logged as they came if it succeeds. A traceback once reached phd-generate's
stderr ahead of its one warning line this way (1 run of the suite in several). A bucket's folder
is named by its path in the bucket: tensorstore's spec gives the bucket apart."""
import logging

import pytest

from phd_jax import files
from phd_jax.checkpoints import recovery


def _echo(folder: str) -> None:  # what asyncio logs for a tensorstore read nobody awaited
  if files.is_url(folder):  # as tensorstore's spec names them
    bucket, key = files.bucket_and_key(folder)
    spec = f"'bucket': '{bucket}', 'driver': 'gcs', 'path': '{key}/8/state/'"
  else:
    spec = f"'driver': 'file', 'path': '{folder}/8/state/'"
  logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=RuntimeError(
      f"Encountered error while reading array index: TensorStore({{'kvstore': {{{spec}}}}})"))


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_a_failed_restores_echoes_are_dropped_and_a_successful_ones_records_kept(
    caplog, tmp_path, where):
  recovery.quiet_echoes_of_failures()
  base = str(tmp_path) if where == "local" else f"gs://my-bucket/{tmp_path.name}"
  failing, fine, other = (f"{base}/{n}/checkpoints" for n in ("failing", "fine", "other"))
  with pytest.raises(ValueError), recovery.attempt(failing):
    _echo(failing)
    assert not caplog.records  # held: the restore has not ended yet
    raise ValueError("OUT_OF_RANGE")
  _echo(failing)  # after the failure was raised (a future collected later)
  assert not caplog.records
  with recovery.attempt(fine):
    _echo(fine)
    _echo(other)  # names no folder being restored: logged at once
    assert len(caplog.records) == 1
  assert ["/fine/" in str(r.exc_info[1]) for r in caplog.records] == [False, True]
