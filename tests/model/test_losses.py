"""The chunked loss equals the whole-logits loss (value and gradients); the z-loss adds its term."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs import model_tiny
from phd_jax.model.losses import lm_loss
from phd_jax.model.transformer import Transformer
from tests.helpers import forward, value_and_grad


def _model(tie=True, variant="phd_cswa", k=2):
  cfg = model_tiny.get_config()
  cfg.model.update(tie_embeddings=tie)
  cfg.model.phd.update(variant=variant, num_copies=k, window=3 if variant != "phd" else 0,
                       chunk=4 if variant == "phd_cswa" else 0)
  return Transformer(cfg.model, rngs=nnx.Rngs(3))


def _batch(seq_len=13, b=2, vocab=257, seed=0):
  rng = np.random.default_rng(seed)
  return {"inputs": jnp.asarray(rng.integers(0, vocab, (b, seq_len)), jnp.int32),
          "targets": jnp.asarray(rng.integers(0, vocab, (b, seq_len)), jnp.int32)}


def _reference(model, batch, z_coef):
  """Independent: whole fp32 logits from model(tokens), optax's cross-entropy."""
  logits = model(batch["inputs"])  # [B, L, vocab]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()
  lse = jax.scipy.special.logsumexp(logits, axis=-1)
  return ce + z_coef * jnp.mean(lse ** 2), ce


def _train_cfg(chunk, z):
  return ml_collections.ConfigDict({"loss_chunk": chunk, "z_loss": z})


@pytest.mark.parametrize("chunk, tie", [(1, True), (5, False), (13, True), (64, False)])
# one token per chunk, uneven chunks (13 = 5 + 5 + 3), exactly one chunk, a chunk beyond L
def test_chunked_loss_and_grads_equal_whole_logits(chunk, tie):
  model, batch = _model(tie), _batch()
  grad = lambda f: value_and_grad(f, model, has_aux=True)
  (loss, aux), g = grad(lambda m: lm_loss(m, batch, _train_cfg(chunk, 0.0)))
  (ref, ce), g_ref = grad(lambda m: _reference(m, batch, 0.0))
  np.testing.assert_allclose(loss, ref, rtol=1e-6)
  np.testing.assert_allclose(aux["ce"], ce, rtol=1e-6)
  assert float(aux["z_loss"]) == 0.0
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * float(jnp.abs(b).max()))


def test_z_loss_adds_its_term():
  model, batch = _model(tie=False), _batch(seq_len=11)
  # Scale the head so logsumexp is far from 0 and the z term is large enough to see.
  model.lm_head.kernel[...] = model.lm_head.kernel[...] * 40.0
  z = 1e-2
  grad = lambda f: value_and_grad(f, model, has_aux=True)
  (loss, aux), g = grad(lambda m: lm_loss(m, batch, _train_cfg(4, z)))
  (ref, ce), g_ref = grad(lambda m: _reference(m, batch, z))
  (loss0, _), _ = grad(lambda m: lm_loss(m, batch, _train_cfg(4, 0.0)))
  np.testing.assert_allclose(loss, ref, rtol=1e-6)
  logits = forward(model, batch["inputs"])
  expected_z = z * np.mean(np.asarray(jax.scipy.special.logsumexp(logits, axis=-1)) ** 2)
  assert expected_z > 1e-3  # a visible effect, not rounding
  np.testing.assert_allclose(aux["z_loss"], expected_z, rtol=1e-5)
  np.testing.assert_allclose(loss - loss0, expected_z, rtol=1e-4)
  np.testing.assert_allclose(aux["ce"], ce, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * float(jnp.abs(b).max()))


def test_lm_loss_signature():
  model, batch = _model(variant="phd", k=3), _batch(seq_len=7)
  loss, aux = lm_loss(model, batch, _train_cfg(3, 1e-4))
  assert set(aux) == {"ce", "z_loss"}
  np.testing.assert_allclose(loss, aux["ce"] + aux["z_loss"], rtol=1e-6)
  loss_default, _ = lm_loss(model, batch)  # no train config: defaults, z-loss off
  np.testing.assert_allclose(loss_default, aux["ce"], rtol=1e-6)
