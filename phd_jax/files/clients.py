"""The settings of the object-store clients, derived where a client is first made, never at
import: importing phd_jax leaves the environment as it found it.

`STORAGE_EMULATOR_HOST` points GCS clients at a local emulator (with anonymous credentials),
`AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) points S3 clients at another endpoint (MinIO, R2,
Ceph, moto). Whatever else gcsfs, s3fs and tensorstore (orbax's arrays) need follows from those
and from the user's own S3 credentials, as botocore's chain finds them: the environment,
AWS_PROFILE with the shared credentials and config files, container and instance roles.

Settings go to the clients themselves where they take them: fsspec's defaults for gcsfs and
s3fs, the kvstore spec for tensorstore's s3 driver (`S3Settings.tensorstore_credentials`). The
environment is written only for what a client reads from nowhere else (gcsfs's and tensorstore's
GCS settings; tensorstore's dummy S3 keys), at first use, never over a variable the user set.
No credential is ever invented where the user has one: dummy S3 keys only at an endpoint where
botocore's chain finds none.
"""
from __future__ import annotations

import dataclasses
import os
import threading

DUMMY_S3_KEY = "anonymous"  # S3 clients sign every request: a key when the user has none
DEFAULT_S3_REGION = "us-east-1"  # what S3-compatible servers (MinIO, moto) sign with by default
# botocore's source of the credentials it found -> the same source in tensorstore's terms.
TENSORSTORE_SOURCES = {"env": "environment", "iam-role": "imds", "container-role": "ecs"}


@dataclasses.dataclass(frozen=True)
class S3Settings:
  """What the S3 clients are configured with (tensorstore takes it all in its spec)."""
  endpoint: str | None = None  # AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; None: AWS itself
  region: str | None = None  # the user's (AWS_DEFAULT_REGION, a profile's, AWS_REGION), else
                            # us-east-1 at an endpoint
  dummy_keys: bool = False  # at an endpoint, botocore's chain found no credentials
  tensorstore_credentials: dict = dataclasses.field(
      default_factory=lambda: {"type": "default"})  # the aws_credentials of its s3 spec


_seen: dict[str, tuple] = {}  # per scheme: the variables it was last configured from
_derived: dict[str, dict[str, str]] = {"gs": {}, "s3": {}}  # per scheme: variables set here
_defaults: dict[str, dict] = {}  # per fsspec protocol: what was put in its defaults here
_s3 = S3Settings()
_lock = threading.Lock()


def configure_clients(scheme: str | None = None) -> None:
  """Derives the settings of `scheme`'s clients ('gs', 's3'; None: both) from the current
  variables; cheap when they did not change since the last call, redone when they did."""
  if scheme in (None, "gs"):
    _configure("gs", "STORAGE_EMULATOR_HOST", _configure_gcs)
  if scheme in (None, "s3"):
    _configure("s3", "AWS_", _configure_s3)


def s3_settings() -> S3Settings:
  """The S3 clients' settings under the current variables."""
  configure_clients("s3")
  return _s3


def _configure(scheme: str, prefix: str, configure) -> None:
  """Runs `configure` when the user's variables starting with `prefix` (not those set here)
  differ from the last time, with what an earlier run set here undone first."""
  mine = _derived[scheme]
  variables = tuple(sorted((k, v) for k, v in os.environ.items()
                           if k.startswith(prefix) and mine.get(k) != v))
  if _seen.get(scheme) == variables:
    return
  with _lock:  # data-loading threads make clients too
    if _seen.get(scheme) == variables:
      return
    for name, value in mine.items():
      if os.environ.get(name) == value:  # still as set here
        del os.environ[name]
    mine.clear()
    configure()
    _seen[scheme] = variables


def _configure_gcs() -> None:
  import fsspec  # lazily: local-only runs never import the cloud clients
  host = os.environ.get("STORAGE_EMULATOR_HOST")
  if host:
    url = host if host.startswith(("http://", "https://")) else "http://" + host
    _derive("gs", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # at gcsfs's import: no gRPC
    _derive("gs", "TENSORSTORE_GCS_HTTP_URL", url)  # orbax's arrays go through tensorstore
    _derive("gs", "GOOGLE_AUTH_TOKEN_FOR_TESTING", "anonymous")  # tensorstore: no lookup
  # Anonymous gcsfs for every caller (orbax's epath too), so all share one client and its cache.
  _set_defaults(fsspec.config.conf, "gcs", {"token": "anon"} if host else {})


def _configure_s3() -> None:
  import fsspec
  global _s3
  _s3 = _resolve_s3()
  if _s3.dummy_keys:  # the one way tensorstore takes keys; s3fs finds the same ones
    _derive("s3", "AWS_ACCESS_KEY_ID", DUMMY_S3_KEY)
    _derive("s3", "AWS_SECRET_ACCESS_KEY", DUMMY_S3_KEY)
  _set_defaults(fsspec.config.conf, "s3",
                {"client_kwargs": {"region_name": _s3.region}} if _s3.endpoint else {})


def _resolve_s3() -> S3Settings:
  """The endpoint, the region and the credentials as botocore sees them.

  botocore's chain ends with the instance metadata service, asked with botocore's own short
  timeout (one attempt of 1 s; AWS_METADATA_SERVICE_TIMEOUT / _NUM_ATTEMPTS change it, and
  AWS_EC2_METADATA_DISABLED=true skips it), once per process and settings.
  """
  import botocore.session
  endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
  session = botocore.session.Session()
  region = (session.get_config_variable("region") or os.environ.get("AWS_REGION")
            or (DEFAULT_S3_REGION if endpoint else None))
  found = session.get_credentials()
  if found is None and endpoint:  # dummy keys, from the environment (_configure_s3)
    return S3Settings(endpoint, region, True, {"type": "environment"})
  if found is None:  # AWS itself: tensorstore's own chain, unsigned where it finds none either
    return S3Settings(None, region, False, {"type": "default"})
  if found.method in ("shared-credentials-file", "config-file"):
    # tensorstore's own profile lookup needs every part named (a missing file: an empty one).
    files = {f"{part}_file": os.path.expanduser(session.get_config_variable(f"{part}_file"))
             for part in ("credentials", "config")}
    ts = {"type": "profile", "profile": session.profile or "default",
          **{k: f if os.path.isfile(f) else os.devnull for k, f in files.items()}}
  else:  # sso, assume-role, a credential process: tensorstore has no such source, try its chain
    ts = {"type": TENSORSTORE_SOURCES.get(found.method, "default")}
  return S3Settings(endpoint, region, False, ts)


def _derive(scheme: str, name: str, value: str) -> None:
  """Sets the variable `name` for `scheme`'s clients, unless the user set it."""
  if name not in os.environ:
    os.environ[name] = _derived[scheme][name] = value


def _set_defaults(conf: dict, protocol: str, values: dict) -> None:
  """fsspec's default arguments for `protocol`'s filesystem: `values` where the user gave none,
  in place of what an earlier configuration put there."""
  entries = conf.setdefault(protocol, {})
  for key, value in _defaults.pop(protocol, {}).items():
    if entries.get(key) is value:
      del entries[key]
  mine = {k: v for k, v in values.items() if k not in entries}
  entries.update(mine)
  _defaults[protocol] = mine
