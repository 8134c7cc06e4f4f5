"""The Pallas kernel (interpret mode on CPU) against the dense reference; it lowers for TPU."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export

from configs import model_tiny
from pallas_kernels import phd_flash_attention
from phd_jax.model.attention import attention
from phd_jax.model.transformer import Transformer
from phd_jax.spec import PHDSpec
from tests.helpers import value_and_grad, weighted_value_and_grads

CASES = [  # (spec, L, block_q, block_kv): L not a multiple of the block, W < and > a block,
    # chunk borders inside blocks, K from 1 to 4
    (PHDSpec("vanilla", 1), 21, 8, 8),
    (PHDSpec("phd", 2), 13, 8, 8), (PHDSpec("phd", 4), 7, 8, 16),
    (PHDSpec("phd_swa", 2, window=3), 19, 8, 8), (PHDSpec("phd_swa", 3, window=20), 11, 8, 8),
    (PHDSpec("phd_swa", 4, window=5), 10, 16, 8),
    (PHDSpec("phd_cswa", 2, window=6, chunk=5), 17, 8, 8),
    (PHDSpec("phd_cswa", 3, window=4, chunk=3), 11, 8, 16),
    (PHDSpec("repeat", 2), 9, 8, 8), (PHDSpec("repeat", 3), 6, 16, 16),
]


def _inputs(spec, seq_len, hq=4, hkv=2, d=16, dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  t = spec.num_tokens(seq_len)
  mk = lambda h: jnp.asarray(rng.normal(size=(2, t, h, d)), dtype)
  return mk(hq), mk(hkv), mk(hkv), jnp.asarray(rng.normal(size=(2, t, hq, d)), jnp.float32)


@pytest.mark.parametrize("spec, seq_len, bq, bk", CASES, ids=lambda x: str(x))
def test_forward_and_gradients_equal_dense(spec, seq_len, bq, bk):
  q, k, v, w = _inputs(spec, seq_len)
  kernel = lambda q, k, v: phd_flash_attention(q, k, v, spec, block_q=bq, block_kv=bk)
  dense = lambda q, k, v: attention(q, k, v, spec, "dense")
  ((lp, out_p), gp), ((ld, out_d), gd) = (weighted_value_and_grads(kernel, q, k, v, w),
                                          weighted_value_and_grads(dense, q, k, v, w))
  np.testing.assert_allclose(out_p, out_d, atol=2e-6, rtol=1e-5)
  np.testing.assert_allclose(lp, ld, atol=1e-4)
  for a, b, name in zip(gp, gd, "qkv"):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4, err_msg=f"d{name}")


@pytest.mark.parametrize("spec", [PHDSpec("phd_cswa", 3, window=4, chunk=3), PHDSpec("repeat", 2)],
                         ids=str)
def test_bfloat16(spec):
  q, k, v, w = _inputs(spec, 12)
  dense = lambda q, k, v: attention(q, k, v, spec, "dense")
  bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  kernel = lambda q, k, v: phd_flash_attention(q, k, v, spec, block_q=16, block_kv=16)
  (_, out), gp = weighted_value_and_grads(kernel, *bf, w)
  (_, ref), gd = weighted_value_and_grads(dense, q, k, v, w)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=4e-2, rtol=4e-2)
  for a, b in zip(gp, gd):
    np.testing.assert_allclose(a.astype(jnp.float32), b, atol=0.15, rtol=0.1)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("spec", [PHDSpec("phd_cswa", 2, window=16, chunk=32),
                                  PHDSpec("phd_swa", 3, window=16),
                                  PHDSpec("repeat", 2)], ids=str)
def test_forward_and_backward_lower_for_tpu(spec, head_dim):
  t = spec.num_tokens(256)
  q = jax.ShapeDtypeStruct((1, t, 4, head_dim), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((1, t, 2, head_dim), jnp.bfloat16)
  fn = lambda q, k, v: phd_flash_attention(q, k, v, spec, block_q=128, block_kv=128,
                                           interpret=False)
  grads = jax.grad(lambda q, k, v: fn(q, k, v).astype(jnp.float32).sum(), argnums=(0, 1, 2))
  exported = export.export(jax.jit(grads), platforms=["tpu"])(q, kv, kv)
  assert exported.platforms == ("tpu",)
  assert b"tpu_custom_call" in exported.mlir_module_serialized


def test_model_with_pallas_equals_xla():
  m = model_tiny.get_config().model
  m.phd.update(variant="phd_cswa", num_copies=3, window=4, chunk=3)
  m.update(init_std=0.3, pallas_block_q=8, pallas_block_kv=8)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 10)), jnp.int32)
  models = {}
  for impl in ("xla", "pallas"):
    m.attention_impl = impl
    models[impl] = Transformer(m, rngs=nnx.Rngs(1))
  loss = lambda model: jnp.mean(model(x) ** 2)
  (lx, gx), (lp, gp) = (value_and_grad(loss, models[i]) for i in ("xla", "pallas"))
  np.testing.assert_allclose(lp, lx, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gx)):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)
