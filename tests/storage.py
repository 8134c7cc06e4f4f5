"""Real object stores for the tests, on 127.0.0.1: gcp-storage-emulator (the GCS JSON API) and
moto's server mode (S3), each started in this process on a free port, in memory, and stopped
afterwards. The library is pointed at them by the standard variables only: STORAGE_EMULATOR_HOST
and AWS_ENDPOINT_URL (subprocesses inherit them).

gcp-storage-emulator lacks two things current clients use, added here on the emulator's side
(never in phd_jax): `objects.moveTo` (gcsfs renames with it, and retries a 501 for half a minute)
and the `x-goog-generation` header on downloads (tensorstore needs it to reread what it wrote).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from http import HTTPStatus

BUCKET = "phd-test"


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _complete_gcs_emulator() -> None:
  from gcp_storage_emulator import server
  from gcp_storage_emulator.exceptions import NotFound
  from gcp_storage_emulator.handlers import objects
  if getattr(server, "_phd_jax_completed", False):
    return

  def move_to(request, response, storage, *args, **kwargs):
    p = request.params
    try:
      moved = objects._copy(request.base_url, storage, p["bucket_name"], p["object_id"],
                            p["bucket_name"], p["dest_object_id"])
      objects._delete(storage, p["bucket_name"], p["object_id"])
      response.json(moved)
    except NotFound:
      response.status = HTTPStatus.NOT_FOUND

  download = objects.download

  def download_with_generation(request, response, storage, *args, **kwargs):
    with contextlib.suppress(NotFound):
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    return download(request, response, storage, *args, **kwargs)

  objects.download = download_with_generation  # objects.get calls it for ?alt=media
  routes = tuple((rx, {m: download_with_generation if f is download else f
                       for m, f in methods.items()}) for rx, methods in server.HANDLERS)
  move = (r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)"
          r"/moveTo/o/(?P<dest_object_id>.*[^/]+)$", {"POST": move_to})
  server.HANDLERS = (move, *routes)
  server._phd_jax_completed = True


@contextlib.contextmanager
def gcs_emulator(bucket: str = BUCKET) -> Iterator[str]:
  """Serves GCS on 127.0.0.1 with `bucket` made; yields STORAGE_EMULATOR_HOST's value."""
  from gcp_storage_emulator.server import create_server
  _complete_gcs_emulator()
  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # 404s are expected
  port = free_port()
  srv = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
  srv.start()
  srv._api._httpd.handle_error = lambda *a: None  # clients that hang up early: not an error
  try:
    yield f"http://127.0.0.1:{port}"
  finally:
    srv.stop()


@contextlib.contextmanager
def s3_emulator(bucket: str = BUCKET) -> Iterator[str]:
  """Serves S3 (moto) on 127.0.0.1 with `bucket` made; yields AWS_ENDPOINT_URL's value."""
  import boto3
  from moto.server import ThreadedMotoServer
  logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request
  port = free_port()
  srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
  srv.start()
  url = f"http://127.0.0.1:{port}"
  try:
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)
    yield url
  finally:
    srv.stop()


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
  """os.environ with `values` set, restored afterwards."""
  old = {k: os.environ.get(k) for k in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
