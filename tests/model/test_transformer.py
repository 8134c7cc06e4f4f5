"""The Transformer: causal, K = 1 is vanilla, attention paths agree, scan/remat match the loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import model_tiny
from phd_jax.model.transformer import Transformer
from tests.helpers import forward, value_and_grad

VARIANTS = {
    "vanilla": dict(variant="vanilla", num_copies=1, window=0, chunk=0),
    "phd": dict(variant="phd", num_copies=3, window=0, chunk=0),
    "phd_swa": dict(variant="phd_swa", num_copies=2, window=3, chunk=0),
    "phd_cswa": dict(variant="phd_cswa", num_copies=3, window=4, chunk=3),
    "repeat": dict(variant="repeat", num_copies=2, window=0, chunk=0),
}


def tiny(**phd):
  m = model_tiny.get_config().model
  m.phd.update(phd)
  m.init_std = 0.3  # at OLMo2's 0.02 a tiny model's attention barely moves its logits
  return m


def tokens(batch=2, seq_len=12, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (batch, seq_len)), jnp.int32)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("scheme", ["shared", "interleaved"])
def test_causal(name, scheme):
  """Changing tokens after t never changes logits at or before t."""
  m = tiny(**VARIANTS[name], position_scheme=scheme)
  model = Transformer(m, rngs=nnx.Rngs(0))
  x = tokens()
  t = 6
  y = x.at[:, t + 1:].set((x[:, t + 1:] + 17) % 256)
  a, b = forward(model, x), forward(model, y)
  np.testing.assert_allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-6)
  assert np.abs(np.asarray(a[:, t + 1:] - b[:, t + 1:])).max() > 1e-3  # the change is visible


def test_phd_with_one_copy_is_vanilla():
  vanilla = Transformer(tiny(**VARIANTS["vanilla"]), rngs=nnx.Rngs(3))
  phd1 = Transformer(tiny(variant="phd", num_copies=1, window=0, chunk=0), rngs=nnx.Rngs(3))
  x = tokens()
  np.testing.assert_allclose(forward(vanilla, x), forward(phd1, x), atol=1e-6)
  np.testing.assert_array_equal(jax.tree.leaves(nnx.state(vanilla, nnx.Param))[0],
                                jax.tree.leaves(nnx.state(phd1, nnx.Param))[0])


@pytest.mark.parametrize("name", ["phd", "phd_cswa", "repeat"])
def test_xla_and_dense_models_agree(name):
  x = tokens()
  models = {impl: Transformer(tiny(**VARIANTS[name], attention_impl=impl), rngs=nnx.Rngs(1))
            for impl in ("xla", "dense")}
  loss = lambda model: jnp.mean(model(x) ** 2)
  (lx, gx), (ld, gd) = (value_and_grad(loss, models[i]) for i in ("xla", "dense"))
  np.testing.assert_allclose(lx, ld, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(gx), jax.tree.leaves(gd)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_copies_see_more_than_the_originals():
  """With K > 1 the logits come from hidden copies, so they differ from vanilla's."""
  x = tokens()
  vanilla = Transformer(tiny(**VARIANTS["vanilla"]), rngs=nnx.Rngs(3))
  phd = Transformer(tiny(**VARIANTS["phd"]), rngs=nnx.Rngs(3))
  assert np.abs(np.asarray(forward(vanilla, x) - forward(phd, x))).max() > 1e-4


def test_scan_and_remat_match_the_layer_loop():
  m = tiny(**VARIANTS["phd_cswa"])
  loop = Transformer(m, rngs=nnx.Rngs(0))
  m_scan = tiny(**VARIANTS["phd_cswa"])
  m_scan.update(scan_layers=True, remat=True)
  scan = Transformer(m_scan, rngs=nnx.Rngs(0))
  # Give the scanned model the loop's weights, stacked over depth.
  layers = [nnx.state(layer, nnx.Param) for layer in loop.layers]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.to_pure_dict(l) for l in layers])
  scan_layers = nnx.state(scan.layers, nnx.Param)
  nnx.replace_by_pure_dict(scan_layers, stacked)
  nnx.update(scan.layers, scan_layers)
  for name in ("embed", "final_norm"):
    nnx.update(getattr(scan, name), nnx.state(getattr(loop, name)))
  x = tokens()
  np.testing.assert_allclose(forward(loop, x), forward(scan, x), atol=1e-5)
  _, g_loop = value_and_grad(lambda mod: mod(x).mean(), loop)
  _, g_scan = value_and_grad(lambda mod: mod(x).mean(), scan)
  np.testing.assert_allclose(g_loop["embed"]["embedding"][...], g_scan["embed"]["embedding"][...],
                             atol=1e-6)


def test_copy_embedding_and_bf16_run():
  m = tiny(**VARIANTS["phd_swa"], copy_embedding=True)
  m.update(dtype="bfloat16", tie_embeddings=False)
  model = Transformer(m, rngs=nnx.Rngs(0))
  assert model.copy_embed[...].shape == (2, m.d_model)
  out = forward(model, tokens())
  assert out.dtype == jnp.float32 and out.shape == (2, 12, m.vocab_size)
  assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("field, value, match", [
    ("num_heads", 3, "model.num_heads"),
    ("head_dim", 7, "model.head_dim"),
    ("attention_impl", "flash", "model.attention_impl"),
    ("dtype", "float8", "model.dtype"),
    ("d_model", 0, "model.d_model"),
])
def test_bad_model_config_raises(field, value, match):
  m = tiny()
  m[field] = value
  with pytest.raises(ValueError, match=match):
    Transformer(m, rngs=nnx.Rngs(0))


def test_bad_phd_config_names_the_field():
  with pytest.raises(ValueError, match=r"config\.model\.phd.*window"):
    Transformer(tiny(variant="phd_swa", num_copies=2, window=0), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="position_scheme"):
    Transformer(tiny(position_scheme="rotary"), rngs=nnx.Rngs(0))
