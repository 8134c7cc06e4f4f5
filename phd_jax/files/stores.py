"""The object stores behind phd_jax.files' URLs: their clients (configured where first made,
files/clients.py) and the check that a bucket is usable before anything is built."""
from __future__ import annotations

import os
import re
import socket
import urllib.parse

from phd_jax.files.clients import configure_clients

SCHEMES = ("gs", "s3")  # the object stores phd_jax reads and writes
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def scheme(path: str) -> str | None:
  """'gs' for gs://..., None for a local path; a ValueError for a URL of another store."""
  m = _URL.match(str(path))
  if not m:
    return None
  s = m.group(1).lower()
  s = "gs" if s == "gcs" else s
  if s not in SCHEMES:
    raise ValueError(f"{path}: unsupported URL scheme {m.group(1)!r}; allowed: a local path, "
                     + ", ".join(f"{x}://BUCKET/..." for x in SCHEMES))
  return s


def is_url(path: str) -> bool:
  return scheme(path) is not None


def bucket_and_key(url: str) -> tuple[str, str]:
  """'gs://b/x/y' -> ('b', 'x/y'): the bucket and the object key (or prefix) in it."""
  bucket, _, key = url.split("://", 1)[1].partition("/")
  return bucket, key


def filesystem(path: str):
  """The fsspec filesystem serving the URL `path` (gcsfs, s3fs): the very client orbax's epath
  uses, so that both see one listing cache (a step moved here is gone for orbax too)."""
  from etils.epath import backend  # lazily: local-only runs never import the cloud clients
  s = scheme(path)
  configure_clients(s)  # the first client made sees the settings
  return backend.fsspec_backend.fs(f"{s}://")


def _endpoint(s: str) -> urllib.parse.ParseResult:
  """Where the clients send requests: the emulator / endpoint variable, else the cloud's."""
  url = (os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
         if s == "gs" else os.environ.get("AWS_ENDPOINT_URL_S3")
         or os.environ.get("AWS_ENDPOINT_URL") or "https://s3.amazonaws.com")
  return urllib.parse.urlparse(url if "://" in url else "http://" + url)


def check_access(path: str, what: str, write: bool = False) -> None:
  """Fails fast, before anything is built, with one line naming `what` (a flag or config
  field), the path, and what to check, if the object store behind a URL cannot be reached, the
  bucket is missing, or (with `write`) it cannot be written. Nothing for a local path."""
  if not is_url(path):
    return
  s = scheme(path)
  bucket = bucket_and_key(path)[0]
  hint = ("STORAGE_EMULATOR_HOST, or your credentials (gcloud auth application-default login)"
          if s == "gs" else "AWS_ENDPOINT_URL, or your credentials (AWS_PROFILE, "
          "AWS_ACCESS_KEY_ID)")
  endpoint = _endpoint(s)
  try:
    socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=10).close()
  except OSError as e:
    raise ValueError(f"{what}={path}: cannot reach {s}:// storage at {endpoint.geturl()} "
                     f"({e.strerror or e}); check the network and {hint}") from None
  # Only object permissions are assumed (a pod's service account often may not read the
  # bucket's own metadata): a write probe for writes, a listing of the path's prefix for reads.
  base = re.split(r"[*?\[]", path, maxsplit=1)[0]  # a glob: the folder its matches lie in
  base = base if base == path else base.rsplit("/", 1)[0]
  try:
    fsys = filesystem(path)
    if write:
      probe = f"{path.rstrip('/')}/.phd_jax_write_check.{os.getpid()}"
      fsys.pipe_file(probe, b"")
      fsys.rm_file(probe)
    elif fsys.invalidate_cache(base) or not fsys.exists(base):  # others may have written
      raise ValueError(f"{what}={path} is invalid: nothing at {base} (a missing bucket, a "
                       f"wrong path, or no permission to list it); check the path and {hint}")
  except FileNotFoundError:
    raise ValueError(f"{what}={path} is invalid: the bucket {s}://{bucket} does not exist "
                     f"(or is not visible with these credentials); create it or check {hint}"
                     ) from None
  except ValueError:
    raise
  except Exception as e:  # the clients raise many kinds: connection, permission, auth
    why = " ".join(str(e).split())[:200] or type(e).__name__
    raise ValueError(f"{what}={path}: cannot {'write to' if write else 'read'} {s}://{bucket} "
                     f"({type(e).__name__}: {why}); check the network, {hint}, and that "
                     f"you may {'write to' if write else 'read'} the bucket") from None
