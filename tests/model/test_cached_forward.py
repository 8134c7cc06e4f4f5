"""The model's own __call__ over a KV cache: one cached forward of a whole sequence (every copy
of every position, in the grouped layout) gives the last position's logits of the plain forward
pass and leaves a cache that the next decode step continues exactly."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import model_tiny
from phd_jax.inference.decode import decode_step, generate
from phd_jax.masks import expand_copies, token_coords
from phd_jax.model.kv_cache import TokenCoords, init_cache
from phd_jax.model.transformer import Transformer

SPECS = [("vanilla", 1, 0, 0), ("phd", 3, 0, 0), ("phd_swa", 2, 3, 0), ("phd_cswa", 3, 4, 2),
         ("repeat", 2, 0, 0)]


def tiny(variant, k, w, c, **model):
  m = model_tiny.get_config().model
  m.phd.update(variant=variant, num_copies=k, window=w, chunk=c)
  m.init_std = 0.3  # at OLMo2's 0.02 a tiny model's attention barely moves its logits
  m.update(model)
  return m


@pytest.mark.parametrize("variant, k, w, c", SPECS, ids=str)
def test_one_cached_forward_of_a_sequence_is_the_forward_pass(variant, k, w, c):
  m = tiny(variant, k, w, c)
  model = Transformer(m, rngs=nnx.Rngs(0))
  toks = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 10)), jnp.int32)
  full = nnx.jit(lambda mod, t: mod(t))(model, toks)  # [B, 10, vocab]
  seq_len = 9
  pos, copy = token_coords(seq_len, k)  # the grouped layout: it ends with copy K-1 of n = 8
  coords = TokenCoords(pos=jnp.broadcast_to(jnp.asarray(pos, jnp.int32), (2, pos.size)),
                       valid=jnp.ones((2, pos.size), bool), copy=tuple(int(j) for j in copy))
  cached = nnx.jit(lambda mod, t, cache: mod(t, cache, coords))
  logits, cache = cached(model, expand_copies(toks[:, :seq_len], k), init_cache(m, 2, 10))
  np.testing.assert_allclose(logits, full[:, seq_len - 1], atol=2e-5, rtol=1e-5)
  # The cache it leaves (originals, the ring of the last W hidden tokens) is the decode cache.
  logits, _ = nnx.jit(decode_step)(model, toks[:, seq_len],
                                   cache.replace(length=jnp.full((2,), seq_len, jnp.int32)))
  np.testing.assert_allclose(logits, full[:, seq_len], atol=2e-5, rtol=1e-5)


def test_generate_has_no_default_end_token():
  """A byte-level default (256) would let a BPE run sample past its own end marker."""
  model = Transformer(tiny("phd", 2, 0, 0), rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match="eos_id"):
    generate(model, [[1, 2]], 2)
