"""phd_jax.files: the globs, the hash split and the atomic writes every reader and writer uses."""
import os

import pytest

from phd_jax import files


def test_expand_takes_comma_separated_globs_sorted_and_deduplicated(tmp_path):
  for name in ("b.txt", "a.txt", "sub/c.txt", "d.json"):
    os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
    (tmp_path / name).write_text(name)
  os.makedirs(tmp_path / "dir.txt")  # a folder that matches is not a file
  got = files.expand(f"{tmp_path}/*.txt, {tmp_path}/a.txt,{tmp_path}/**/*.txt,")
  assert got == [str(tmp_path / n) for n in ("a.txt", "b.txt", "sub/c.txt")]
  assert files.expand(f"{tmp_path}/none*") == [] and files.expand("") == []


def test_the_hash_split_depends_on_the_key_alone():
  keys = [f"doc{i}" for i in range(2000)]
  held = [files.held_out(k, 0.1) for k in keys]
  assert held == [files.held_out(k.encode(), 0.1) for k in keys]  # str and bytes alike
  assert 0.07 < sum(held) / len(held) < 0.13
  assert all(0 <= files.hash_fraction(k) < 1 for k in keys)


def test_split_files_is_relative_to_the_root_and_never_one_sided(tmp_path):
  names = [f"f{i}.txt" for i in range(40)]
  here = files.split_files([str(tmp_path / "x" / n) for n in names], 0.2)
  there = files.split_files([str(tmp_path / "elsewhere" / "y" / n) for n in names], 0.2)
  assert here == there and 0 < sum(here) < len(names)  # the same split wherever the corpus is
  assert files.split_files(["/a/one", "/a/two"], 0.0) == [False, True]  # tiny: one each side
  assert files.split_files(["/a/one", "/a/two"], 0.999999) == [False, True]


def test_atomic_writes_replace_whole_or_not_at_all(tmp_path):
  path = str(tmp_path / "new" / "out.json")
  files.write_text(path, "first")
  assert open(path).read() == "first" and not os.path.exists(path + files.TMP_SUFFIX)
  with pytest.raises(RuntimeError):
    with files.atomic_open(path) as f:
      f.write("half of the second")
      raise RuntimeError("killed mid-write")
  assert open(path).read() == "first"  # readers never see the half-written version
  files.write_text(path, "second")
  assert open(path).read() == "second"
  files.copy_file(path, str(tmp_path / "copy.json"))
  files.copy_file(path, path)  # onto itself: nothing to do
  assert open(tmp_path / "copy.json").read() == open(path).read() == "second"


def test_the_same_calls_serve_buckets(bucket, tmp_path):
  """gs:// (gcp-storage-emulator) and s3:// (moto) through the same functions as local paths."""
  p = files.join(bucket, "a", "x.txt")
  files.write_text(p, "hello")
  assert files.read_text(p) == "hello" and files.isfile(p) and files.isdir(files.join(bucket, "a"))
  assert files.read_range(p, 1, 3) == b"el" and files.size(p) == 5
  y = files.join(bucket, "a", "sub", "y.txt")
  files.write_text(y, "y")
  assert sorted(files.listdir(files.join(bucket, "a"))) == ["sub", "x.txt"]
  assert files.expand(f"{bucket}/**/*.txt, {bucket}/a/*.txt") == sorted([p, y])
  assert files.split_files([p, y], 0.5) == files.split_files([str(tmp_path / "a/x.txt"),
                                                              str(tmp_path / "a/sub/y.txt")], 0.5)
  with pytest.raises(RuntimeError), files.atomic_open(p) as f:
    f.write("half")
    raise RuntimeError("killed mid-write")
  assert files.read_text(p) == "hello"  # the object is uploaded whole or not at all
  files.rename(files.join(bucket, "a"), files.join(bucket, "b"))
  assert files.read_text(files.join(bucket, "b", "sub", "y.txt")) == "y" and not files.exists(p)
  files.copy_file(files.join(bucket, "b", "x.txt"), str(tmp_path / "l.txt"))
  files.copy_file(str(tmp_path / "l.txt"), files.join(bucket, "c.txt"))
  assert files.read_text(files.join(bucket, "c.txt")) == "hello"
  files.rmtree(files.join(bucket, "b"))
  assert not files.exists(files.join(bucket, "b", "x.txt"))
  assert not os.path.exists(bucket.split(":")[0] + ":")  # no local folder named after a URL


def test_unsupported_urls_and_missing_buckets_are_one_clear_error(gs_url):
  with pytest.raises(ValueError, match=r"unsupported URL scheme 'hdfs'.*gs://BUCKET"):
    files.exists("hdfs://x/y")
  with pytest.raises(ValueError, match=r"--workdir=gs://no-such-bucket/run is invalid: the "
                     r"bucket gs://no-such-bucket does not exist"):
    files.check_access("gs://no-such-bucket/run", "--workdir", write=True)
  files.check_access(f"{gs_url}/run", "--workdir", write=True)
  assert files.listdir(gs_url) == [] or ".phd_jax_write_check" not in " ".join(
      files.listdir(gs_url))  # the probe is removed
