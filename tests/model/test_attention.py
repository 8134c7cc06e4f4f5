"""The O(K) `xla` attention equals the dense masked softmax, in outputs and gradients."""
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from phd_jax.model.attention import attention, sdpa_implementation
from phd_jax.spec import PHDSpec
from tests.helpers import weighted_value_and_grads

CASES = [  # (spec, L): L not a multiple of C, W larger than L, K up to 4
    (PHDSpec("vanilla", 1), 9),
    (PHDSpec("phd", 1), 7), (PHDSpec("phd", 2), 9), (PHDSpec("phd", 3), 6), (PHDSpec("phd", 4), 5),
    (PHDSpec("phd_swa", 2, window=1), 9), (PHDSpec("phd_swa", 2, window=5), 12),
    (PHDSpec("phd_swa", 3, window=4), 7), (PHDSpec("phd_swa", 4, window=1), 6),
    (PHDSpec("phd_swa", 4, window=3), 8), (PHDSpec("phd_swa", 3, window=40), 9),
    (PHDSpec("phd_cswa", 2, window=3, chunk=4), 10),
    (PHDSpec("phd_cswa", 3, window=4, chunk=3), 11),
    (PHDSpec("phd_cswa", 4, window=2, chunk=2), 7),
    (PHDSpec("phd_cswa", 2, window=16, chunk=5), 13),
    (PHDSpec("phd_cswa", 3, window=30, chunk=20), 6),
    (PHDSpec("repeat", 2), 7), (PHDSpec("repeat", 4), 5),
]


def _qkv(spec, seq_len, hq=4, hkv=2, d=8, dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  t = spec.num_tokens(seq_len)
  mk = lambda h: jnp.asarray(rng.normal(size=(2, t, h, d)), dtype)
  return mk(hq), mk(hkv), mk(hkv)


def assert_equal_dense(spec, q, k, v, **kw):
  """attention(impl="xla", **kw) equals the dense masked softmax: outputs, loss and gradients."""
  w = jnp.cos(jnp.arange(q.size, dtype=jnp.float32)).reshape(q.shape)  # out's shape is q's
  run = lambda impl, **kw: weighted_value_and_grads(
      lambda q, k, v: attention(q, k, v, spec, impl, **kw), q, k, v, w)
  ((lx, out_x), gx), ((ld, out_d), gd) = run("xla", **kw), run("dense")
  np.testing.assert_allclose(out_x, out_d, atol=2e-6, rtol=1e-5)
  np.testing.assert_allclose(lx, ld, atol=1e-4)  # a sum of ~2k terms of size ~1
  for a, b, name in zip(gx, gd, "qkv"):
    np.testing.assert_allclose(a, b, atol=5e-6, rtol=1e-4, err_msg=f"d{name}")


@pytest.mark.parametrize("spec, seq_len", CASES, ids=lambda x: str(x))
def test_xla_equals_dense(spec, seq_len):
  assert_equal_dense(spec, *_qkv(spec, seq_len))


@pytest.mark.parametrize("hq, hkv", [(2, 2), (6, 2), (4, 1)])
def test_gqa_groupings(hq, hkv):
  spec = PHDSpec("phd_cswa", 3, window=4, chunk=3)
  q, k, v = _qkv(spec, 8, hq=hq, hkv=hkv)
  fwd = lambda impl: jax.jit(lambda q, k, v: attention(q, k, v, spec, impl))(q, k, v)
  np.testing.assert_allclose(fwd("xla"), fwd("dense"), atol=2e-6, rtol=1e-5)


def test_bfloat16_close_to_float32_reference():
  spec = PHDSpec("phd_swa", 3, window=4)
  q, k, v = _qkv(spec, 16)
  ref = attention(q, k, v, spec, "dense")
  bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  out = attention(*bf, spec, "xla")
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2, rtol=3e-2)


def largest_intermediate(fn, q, k, v) -> int:
  """Elements of the largest array in the forward+backward of sum(fn(q, k, v)), nested jaxprs
  (scan, remat) included."""
  jaxpr = jax.make_jaxpr(jax.grad(lambda *a: fn(*a).sum(), argnums=(0, 1, 2)))(q, k, v)
  sizes = []

  def walk(jx):
    for eqn in jx.eqns:
      sizes.extend(int(np.prod(o.aval.shape)) for o in eqn.outvars if hasattr(o.aval, "shape"))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jaxpr.jaxpr)
  return max(sizes)


@pytest.mark.parametrize("spec", [PHDSpec("phd", 4), PHDSpec("phd_swa", 4, window=16),
                                  PHDSpec("phd_cswa", 4, window=16, chunk=8)], ids=str)
def test_no_dense_score_matrix_on_the_training_path(spec):
  """No intermediate of the forward+backward is as large as the (K*L)^2 score matrix."""
  seq_len, hq = 64, 4
  q, k, v = _qkv(spec, seq_len, hq=hq)
  largest = largest_intermediate(lambda q, k, v: attention(q, k, v, spec, "xla"), q, k, v)
  dense_scores = q.shape[0] * hq * spec.num_tokens(seq_len) ** 2
  # The originals part is K*L x L per head: a 1/K share of the dense matrix.
  assert largest <= dense_scores // spec.num_copies


# Every variant with small query blocks (1, 2 or 3 positions, in turn), so several blocks and a
# ragged last one are exercised; the default-block cases above run each as one block.
BLOCKED = [(s, n, i % 3 + 1)
           for i, (s, n) in enumerate(c for c in CASES if c[0].variant != "repeat")]


@pytest.mark.parametrize("spec, seq_len, block", BLOCKED, ids=lambda x: str(x))
def test_blocked_xla_equals_dense(spec, seq_len, block):
  """Small query blocks, so several blocks (and a ragged last one) are exercised per variant."""
  assert_equal_dense(spec, *_qkv(spec, seq_len, seed=block), xla_block=block)


@pytest.mark.parametrize("spec", [PHDSpec("vanilla", 1), PHDSpec("phd", 3),
                                  PHDSpec("phd_cswa", 2, window=16, chunk=8)], ids=str)
def test_blocked_memory_is_linear_in_length(spec):
  """Forward+backward: no intermediate grows like L^2; the largest is one block's scores."""
  seq_len, hq, block = 256, 4, 16
  q, k, v = _qkv(spec, seq_len, hq=hq)
  largest = largest_intermediate(
      lambda q, k, v: attention(q, k, v, spec, "xla", xla_block=block), q, k, v)
  one_block = q.shape[0] * hq * block * spec.num_copies * seq_len
  assert largest <= one_block
  assert largest < q.shape[0] * hq * spec.num_tokens(seq_len) * seq_len // 8


def test_jax_impl_is_causal_attention_for_k1_only():
  spec = PHDSpec("vanilla", 1)
  q, k, v = _qkv(spec, 9)
  np.testing.assert_allclose(attention(q, k, v, spec, "jax"), attention(q, k, v, spec, "dense"),
                             atol=2e-6, rtol=1e-5)
  with pytest.raises(ValueError, match="K=1 only"):
    attention(*_qkv(PHDSpec("phd", 2), 4), PHDSpec("phd", 2), "jax")


def test_jax_impl_asks_for_cudnn_only_on_gpus_with_16_bit_inputs():
  assert sdpa_implementation(jnp.bfloat16, "gpu") == "cudnn"
  assert sdpa_implementation(jnp.float16, "cuda") == "cudnn"
  assert sdpa_implementation(jnp.float32, "gpu") == "xla"  # cuDNN's fused attention is 16-bit
  for backend in ("cpu", "tpu"):
    assert sdpa_implementation(jnp.bfloat16, backend) == "xla"


def test_jax_impl_falls_back_to_xla_on_this_cpu():
  spec = PHDSpec("vanilla", 1)
  q, k, v = _qkv(spec, 16, dtype=jnp.bfloat16)
  assert jax.default_backend() == "cpu" and sdpa_implementation(q.dtype) == "xla"
  want = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
  np.testing.assert_array_equal(np.asarray(attention(q, k, v, spec, "jax"), np.float32),
                                np.asarray(want, np.float32))
