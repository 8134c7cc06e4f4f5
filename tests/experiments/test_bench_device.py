"""experiments/bench_device.py and its attention paths: the GPU and TPU paths lowered here without
the hardware (so the first run on a chip does not fail on a typo), the peers' numerics against
the dense reference, and the --quick run end to end with its JSON checked."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.cudnn import fused_attention_stablehlo as cudnn_attention

from experiments import attention_paths, bench_device
from experiments.attention_paths import (
                                         Path,
                                         forward_backward,
                                         ours,
                                         peer,
                                         splash_attention,
                                         splash_kernel,
)
from phd_jax.model.attention import attention
from phd_jax.spec import PHDSpec
from tests import commands

SPECS = {"vanilla": PHDSpec("vanilla", 1),
         "phd_cswa_k2": PHDSpec("phd_cswa", 2, window=16, chunk=32),
         "phd_cswa_k3": PHDSpec("phd_cswa", 3, window=16, chunk=32)}
CUSTOM_CALL = {"cuda": "__cudnn$fmha", "tpu": "tpu_custom_call"}  # what each platform's path is


def lowered(path: Path, wrap, q, k, plat: str) -> str:
  return jax.jit(wrap(path.fn)).trace(q, k, k, *path.aux).lower(
      lowering_platforms=(plat,)).as_text()


@pytest.mark.parametrize("name", ["vanilla", "phd_cswa_k2"])
def test_gpu_and_tpu_paths_lower_for_their_platform_here(name, monkeypatch):
  """cuDNN's peer for "cuda", splash and our Pallas kernel for "tpu", forward and
  forward+backward, traced and lowered on this CPU. cuDNN's version is asked while tracing (the
  CUDA plugin answers it): a stand-in answers here."""
  monkeypatch.setattr(cudnn_attention, "check_cudnn_version", lambda: 90800)
  spec, seq_len, heads = SPECS[name], 128, 4
  t = spec.num_tokens(seq_len)
  q = jax.ShapeDtypeStruct((2, t, heads, 64), jnp.bfloat16)  # [B, K*L, Hq, D]
  k = jax.ShapeDtypeStruct((2, t, 2, 64), jnp.bfloat16)  # [B, K*L, Hkv, D]
  paths = [("cuda", peer(spec, seq_len, heads, "cuda")), ("tpu", peer(spec, seq_len, heads, "tpu")),
           ("tpu", ours("pallas", spec, "tpu"))]
  for plat, path in paths:
    forward = lowered(path, lambda f: f, q, k, plat)
    backward = lowered(path, forward_backward, q, k, plat)
    calls = lambda text: re.findall(r"custom_call @([^(]+)\(", text)
    assert calls(forward) and all(c.startswith(CUSTOM_CALL[plat]) for c in calls(forward)), \
        (plat, calls(forward))
    assert len(calls(backward)) > len(calls(forward)), (plat, calls(backward))  # its own kernels
    assert "Backward" in " ".join(calls(backward)) or plat == "tpu"


def test_what_runs_where():
  spec = SPECS["phd_cswa_k2"]
  for plat in ("cuda", "cpu", "rocm"):
    assert ours("pallas", spec, plat).fn is None and "TPU" in ours("pallas", spec, plat).na
  assert ours("pallas", spec, "tpu").fn is not None and ours("xla", spec, "cpu").fn is not None
  assert "cuDNN" in attention_paths.peer_name("cuda")
  assert "splash" in attention_paths.peer_name("tpu")
  assert "XLA" in attention_paths.peer_name("cpu") == attention_paths.peer_name("rocm")
  with pytest.raises(ValueError, match="impl='dense' is not one of"):
    ours("dense", spec, "cpu")


@pytest.mark.parametrize("name", list(SPECS))
def test_peers_compute_the_dense_reference(name):
  """The TPU peer's kernel and mask object (splash, interpreted), the CPU peer, and the cuDNN
  peer's arguments (causal plus the bias; run here by XLA, which takes the same arguments)
  against attention(..., "dense"), the masks' reference."""
  spec, seq_len, heads = SPECS[name], 128, 2
  t = spec.num_tokens(seq_len)
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (1, t, h, 32)) for key, h in zip(keys, (heads, 1, 1)))
  ref = attention(q, k, v, spec, "dense")
  splash = splash_attention(q, k, v, splash_kernel(spec, seq_len, heads, interpret=True))
  np.testing.assert_allclose(splash, ref, atol=2e-5)
  cpu = peer(spec, seq_len, heads, "cpu")
  np.testing.assert_allclose(cpu.fn(q, k, v, *cpu.aux), ref, atol=2e-5)
  cuda = peer(spec, seq_len, heads, "cuda", dtype=jnp.float32)
  if spec.num_copies > 1:
    (bias,) = cuda.aux
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, is_causal=True, implementation="xla")
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_a_path_that_cannot_run_or_fails_is_recorded():
  args = (jnp.ones((1, 8, 1, 4)),) * 3
  assert bench_device.measure(lambda: Path(na="why"), lambda f: f, args, 1) == ({"na": "why"},
                                                                                None)
  bad = lambda q, k, v: q @ jnp.ones((3, 3))  # shapes do not match: a failure, not a crash
  got, out = bench_device.measure(lambda: Path(bad), lambda f: f, args, 1)
  assert out is None and got["error"].startswith("TypeError: dot_general")
  got, out = bench_device.measure(lambda: Path(lambda q, k, v: q + k), lambda f: f, args, 2)
  assert got["ms"] > 0 and got["compile_s"] > 0 and out.shape == (1, 8, 1, 4)


@pytest.mark.slow  # 2-3 min, the command on a CPU (make test-all); its parts are tested above
def test_quick_run_writes_the_json_and_the_table(tmp_path):
  done = commands.module("experiments.bench_device", "--quick", f"--out={tmp_path}", timeout=600)
  result = json.loads((tmp_path / "bench_device_cpu_quick.json").read_text())
  md = (tmp_path / "bench_device_cpu_quick.md").read_text()
  assert md in done.stdout and result["errors"] == []
  d = result["device"]
  assert (d["backend"], d["platform"], d["kind"], d["peak_bf16_tflops"]) == ("cpu", "cpu", "cpu",
                                                                             None)
  assert "MFU left out" in d["mfu_note"] and d["mfu_note"] in md
  s = bench_device.SIZES["quick"]
  assert [(r["variant"], r["K"], r["mfu"]) for r in result["train"]] == [("vanilla", 1, None),
                                                                         ("phd_cswa", 2, None)]
  for r in result["train"]:
    assert r["step_ms"] > 0 and r["tflops_per_s"] > 0
    assert r["tokens_per_s"] == pytest.approx(s["train_batch"] * s["train_len"] / r["step_ms"]
                                              * 1e3)
  rows = result["attention"]["rows"]
  assert [(r["variant"], r["pass"]) for r in rows] == [
      (n, p) for n in SPECS for p in ("forward", "forward+backward")]
  assert "XLA" in result["attention"]["peer"]
  for r in rows:
    assert r["ours_xla"]["ms"] > 0 and r["peer"]["ms"] > 0 and "TPU" in r["ours_pallas"]["na"]
    if r["pass"] == "forward":  # the same function, bf16 rounding apart
      assert r["peer"]["max_abs_diff_vs_ours_xla"] < 0.05
  assert [(r["batch"], r["K"]) for r in result["decode"]] == [(1, 1), (1, 2), (32, 1), (32, 2)]
  assert all(r["tokens_per_s"] > 0 for r in result["decode"])
  for title in ("## Train step", "## Attention, L=256", "## Decode"):
    assert title in md
