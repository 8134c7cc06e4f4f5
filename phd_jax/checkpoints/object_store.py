"""Orbax checkpoints on object stores: gs:// as orbax does it, s3:// taught to its tensorstore.

On a bucket there is no rename: orbax writes a step in place and marks it complete with a
`commit_success.txt` (its COMMIT_FILE atomicity), so an unfinished save is a step folder without
that file. Orbax 0.12 maps only gs:// URLs to a tensorstore remote driver and treats s3:// as a
relative local path; `enable_s3` routes s3:// to tensorstore's s3 driver, with the endpoint,
region and credentials the S3 clients use (tensorstore itself ignores AWS_ENDPOINT_URL). The
clients are configured (files.configure_clients) when the first manager for a bucket is made.
On a multi-host save, orbax's other hosts wait for the primary host to create a folder; in a
bucket a folder exists only once an object is in it (fsspec's mkdir creates nothing), so they
would wait forever: `enable_buckets` lets them go on, as there is nothing to create.
"""
from __future__ import annotations

import orbax.checkpoint as ocp

from phd_jax import files as fs

COMMIT_FILE = "commit_success.txt"


def manager_options(directory: str, **kwargs) -> ocp.CheckpointManagerOptions:
  """CheckpointManagerOptions for `directory`: commit-file atomicity on a bucket."""
  if fs.is_url(directory):
    fs.configure_clients(fs.scheme(directory))  # before orbax makes its clients
    kwargs["atomicity_options"] = ocp.options.AtomicityOptions(
        mode=ocp.options.AtomicityMode.COMMIT_FILE)
    enable_buckets()
    if fs.scheme(directory) == "s3":
      enable_s3()
  return ocp.CheckpointManagerOptions(**kwargs)


def unfinished(directory: str, name: str) -> bool:
  """Whether the step folder `name` in the bucket folder `directory` is a save that never
  completed (orbax writes in place there and marks a finished step with COMMIT_FILE)."""
  return (fs.is_url(directory) and name.isdigit()
          and not fs.exists(fs.join(directory, name, COMMIT_FILE)))


def s3_kvstore(path: str) -> dict:
  """tensorstore's kvstore spec for s3://BUCKET/KEY, as the S3 clients see it: the endpoint,
  the region and the credentials' source botocore found (files/clients.py)."""
  bucket, key = fs.bucket_and_key(path)
  s3 = fs.s3_settings()
  spec = {"driver": "s3", "bucket": bucket, "path": key,
          "aws_credentials": dict(s3.tensorstore_credentials)}
  if s3.endpoint:
    spec["endpoint"] = s3.endpoint
  if s3.region:
    spec["aws_region"] = s3.region
  return spec


def enable_s3() -> None:
  """Routes orbax's tensorstore paths under s3:// to tensorstore's s3 driver (once)."""
  from orbax.checkpoint._src.path import gcs_utils
  from orbax.checkpoint._src.serialization import tensorstore_utils as tsu
  if getattr(tsu, "_phd_jax_s3", False):
    return
  use_remote, normalize, kvstore = tsu._use_gcs_driver, tsu._normalize_path, \
      gcs_utils.get_kvstore_for_gcs
  tsu._use_gcs_driver = lambda d: d.startswith("s3://") or use_remote(d)
  tsu._normalize_path = lambda p: normalize(p).replace("s3:/", "s3://", 1) \
      if p.startswith("s3://") else normalize(p)
  gcs_utils.get_kvstore_for_gcs = lambda p: s3_kvstore(str(p)) \
      if str(p).startswith("s3://") else kvstore(p)
  tsu._phd_jax_s3 = True


def enable_buckets() -> None:
  """Multi-host saves into a bucket: no host waits for a folder to be created (once)."""
  from orbax.checkpoint._src.metadata import array_metadata_store as store
  if getattr(store.Store, "_phd_jax_buckets", False):
    return
  create = store.Store._maybe_create_base_dir

  async def maybe_create(self, base_dir) -> None:
    if not fs.is_url(str(base_dir)):
      await create(self, base_dir)

  store.Store._maybe_create_base_dir = maybe_create
  store.Store._phd_jax_buckets = True
