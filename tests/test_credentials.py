"""No S3 credential is ever invented where the user has one.

AWS_ENDPOINT_URL (MinIO, R2, Ceph, moto) points the S3 clients elsewhere; a user's keys may then
live in a shared credentials file or a named AWS_PROFILE, which environment keys would shadow. The
test reads, at the server, the access key id of every request (its Authorization header): a
moto server on 127.0.0.1 behind a recording WSGI layer. Each case runs in a clean interpreter,
with HOME, the credentials file and AWS_PROFILE as a user's machine would have them, and drives
both clients: s3fs (phd_jax.files, the write probe) and tensorstore (orbax's arrays, through
phd_jax.checkpoints.object_store's spec).
"""
import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator

import pytest

from phd_jax.files.clients import DUMMY_S3_KEY
from tests import commands

BUCKET = "phd-credentials"
KEY_ID = re.compile(r"Credential=([^/]+)/")

# Everything a run does with a bucket, by both clients; prints the AWS_* variables it changed.
CLIENTS = """
import json, os, sys
before = dict(os.environ)
import tensorstore as ts
from phd_jax import files as fs
from phd_jax.checkpoints import object_store
root = sys.argv[1]
fs.check_access(root, "--workdir", write=True)
fs.write_text(root + "/a.txt", "hello")
assert fs.read_text(root + "/a.txt") == "hello" and fs.exists(root + "/a.txt")
kv = ts.KvStore.open(object_store.s3_kvstore(root + "/arrays/")).result()
kv.write("x", b"42").result()
assert kv.read("x").result().value == b"42"
print(json.dumps(sorted(k for k in set(before) | set(os.environ)
                        if k.startswith("AWS_") and before.get(k) != os.environ.get(k))))
"""


@contextlib.contextmanager
def recording_s3() -> Iterator[tuple[str, list]]:
  """A moto S3 server on 127.0.0.1 that records each request's Authorization header (None:
  an unsigned request); yields (endpoint, the headers so far)."""
  import boto3
  from moto.moto_server.werkzeug_app import (
                                             DomainDispatcherApplication,
                                             MotoRequestHandler,
                                             create_backend_app,
  )
  from werkzeug.serving import make_server
  app, seen = DomainDispatcherApplication(create_backend_app), []

  def recording(environ, start_response):
    seen.append(environ.get("HTTP_AUTHORIZATION"))
    return app(environ, start_response)

  server = make_server("127.0.0.1", 0, recording, threaded=True,
                       request_handler=MotoRequestHandler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{server.server_port}"
  try:
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup",
                 aws_secret_access_key="setup").create_bucket(Bucket=BUCKET)
    yield url, seen
  finally:
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def s3_server():
  with recording_s3() as served:
    yield served


def _run_clients(endpoint: str, home, root: str, **env: str) -> list[str]:
  """Runs CLIENTS in a clean interpreter whose only AWS settings are the endpoint and `env`;
  returns the AWS_* variables it changed."""
  clean = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "STORAGE_EMULATOR_HOST"}
  clean.update(HOME=str(home), AWS_ENDPOINT_URL=endpoint, JAX_PLATFORMS="cpu",
               AWS_EC2_METADATA_DISABLED="true",
               **env)
  done = commands.python(CLIENTS, root, clean_env=clean)
  return json.loads(done.stdout.strip().splitlines()[-1])


def _key_ids(authorizations: list[str | None]) -> list[str | None]:
  """The access key id each request was signed with (None: unsigned)."""
  return [(KEY_ID.search(a) or [None, None])[1] if a else None for a in authorizations]


@pytest.mark.parametrize("case", ["credentials_file", "named_profile"])
def test_the_users_own_keys_reach_the_server(case, s3_server, tmp_path):
  endpoint, seen = s3_server
  credentials = tmp_path / "credentials"
  credentials.write_text("[default]\naws_access_key_id = AKIDFROMTHEFILE\n"
                         "aws_secret_access_key = secret-of-the-file\n"
                         "[phd-test]\naws_access_key_id = AKIDOFTHEPROFILE\n"
                         "aws_secret_access_key = secret-of-the-profile\n")
  env = {"AWS_SHARED_CREDENTIALS_FILE": str(credentials)}
  if case == "named_profile":
    env["AWS_PROFILE"] = "phd-test"
  seen.clear()
  changed = _run_clients(endpoint, tmp_path, f"s3://{BUCKET}/{case}", **env)
  want = "AKIDOFTHEPROFILE" if case == "named_profile" else "AKIDFROMTHEFILE"
  assert len(seen) >= 6, seen  # the probe, the object, tensorstore's write and read
  assert _key_ids(seen) == [want] * len(seen)
  assert changed == []  # nothing written that could shadow the file


def test_without_any_credentials_requests_still_work(s3_server, tmp_path):
  """Dummy keys, in the environment: tensorstore takes keys from nowhere else."""
  endpoint, seen = s3_server
  seen.clear()
  changed = _run_clients(endpoint, tmp_path, f"s3://{BUCKET}/anonymous")
  assert len(seen) >= 6 and _key_ids(seen) == [DUMMY_S3_KEY] * len(seen)
  assert changed == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
