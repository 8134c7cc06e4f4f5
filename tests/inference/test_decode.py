"""Prefill + teacher-forced decode steps reproduce the forward pass; sampling and cache size."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import model_tiny
from phd_jax.inference.decode import (
  decode_step,
  generate,
  hidden_run_positions,
  prefill,
  sample_logits,
)
from phd_jax.model.kv_cache import cache_bytes, init_cache
from phd_jax.model.transformer import Transformer


def tiny(variant, k, w=0, c=0, **model):
  m = model_tiny.get_config().model
  m.phd.update(variant=variant, num_copies=k, window=w, chunk=c)
  m.init_std = 0.3  # at OLMo2's 0.02 a tiny model's attention barely moves its logits
  m.update(model)
  return m


def random_tokens(b, length, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (b, length)), jnp.int32)


def jitted(model, truncate=True):
  """Compiled forward, prefill and decode_step of one model (the eager path is slow)."""
  fwd = nnx.jit(lambda mod, t: mod(t))
  pre = nnx.jit(lambda mod, t, c, n=None: prefill(mod, t, c, n, truncate=truncate))
  step = nnx.jit(decode_step)
  return (lambda t: fwd(model, t)), (lambda *a: pre(model, *a)), (lambda *a: step(model, *a))


def assert_decode_matches_forward(m, prompt_lens, total=20, truncate=True, tol=(2e-5, 1e-5)):
  """For each prompt length: prefill, then teacher-forced decode steps up to `total`."""
  fwd, pre, step = jitted(Transformer(m, rngs=nnx.Rngs(0)), truncate)
  toks = random_tokens(2, total)
  full = fwd(toks)  # [B, L, V]
  for prompt_len in prompt_lens:
    logits, cache = pre(toks[:, :prompt_len], init_cache(m, 2, total))
    got = [logits]
    for t in range(prompt_len, total):
      logits, cache = step(toks[:, t], cache)
      got.append(logits)
    np.testing.assert_allclose(jnp.stack(got, 1), full[:, prompt_len - 1:], atol=tol[0],
                               rtol=tol[1], err_msg=f"prompt_len={prompt_len}")


CASES = [  # (variant, K, W, C, prompt lengths): chunk borders, shorter than W, far past the bound
    ("vanilla", 1, 0, 0, [1, 7]),
    ("phd", 2, 0, 0, [1, 9]),
    ("phd", 4, 0, 0, [5]),
    ("phd_swa", 2, 3, 0, [2, 16]),
    ("phd_swa", 3, 5, 0, [3, 17]),
    ("phd_swa", 4, 1, 0, [1, 15]),
    ("phd_cswa", 2, 3, 4, [6, 8, 13]),
    ("phd_cswa", 3, 4, 3, [1, 9, 10]),
    ("phd_cswa", 2, 16, 8, [5, 16]),
    ("repeat", 2, 0, 0, [1, 6]),
    ("repeat", 3, 0, 0, [4]),
]


@pytest.mark.parametrize("variant, k, w, c, prompts", CASES, ids=lambda x: str(x))
def test_prefill_and_decode_equal_the_forward_pass(variant, k, w, c, prompts):
  assert_decode_matches_forward(tiny(variant, k, w, c), prompts)


def test_swa_prompt_far_longer_than_the_truncation_bound():
  m = tiny("phd_swa", 2, 2)
  bound = hidden_run_positions(m_spec := Transformer(m, rngs=nnx.Rngs(0)).spec, m.num_layers, 10**6)
  assert bound == m.num_layers * m_spec.hidden_reach + 1 == 5  # hidden tokens = positions at K=2
  assert_decode_matches_forward(m, [30], total=34)
  assert_decode_matches_forward(m, [30], total=34, truncate=False)


@pytest.mark.parametrize("options", [
    dict(position_scheme="interleaved"), dict(copy_embedding=True), dict(scan_layers=True),
    dict(scan_layers=True, remat=True), dict(qk_norm="head"), dict(qk_norm="none")], ids=str)
def test_model_options_decode_exactly(options):
  phd_opts = {k: v for k, v in options.items() if k in ("position_scheme", "copy_embedding")}
  m = tiny("phd_cswa", 3, 4, 3, **{k: v for k, v in options.items() if k not in phd_opts})
  m.phd.update(phd_opts)
  assert_decode_matches_forward(m, [7], total=12)


@pytest.mark.parametrize("variant, k, w, c", [("phd_swa", 2, 3, 0)])
def test_bf16_scanned_remat_model_decodes_like_its_forward_pass(variant, k, w, c):
  """The paper-size configs' layout (scan + remat, bf16 compute), at bf16 tolerance."""
  m = tiny(variant, k, w, c, scan_layers=True, remat=True, dtype="bfloat16")
  assert_decode_matches_forward(m, [5], total=9, tol=(0.1, 0.05))


@pytest.mark.parametrize("options", [dict(scan_layers=True, remat=True),
                                     dict(remat=True, dtype="bfloat16")], ids=str)
def test_generate_runs_every_layer_layout(options):
  """generate's jitted while loop over scanned and rematerialised models (the size configs'
  layout): greedy tokens equal those of the same weights in the plain layer loop."""
  m = tiny("phd_cswa", 2, 3, 4, **options)
  model = Transformer(m, rngs=nnx.Rngs(0))
  plain = tiny("phd_cswa", 2, 3, 4, dtype=m.dtype)
  loop = Transformer(plain, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  if m.scan_layers:  # unstack the scanned layers into the loop's list
    stacked = params.pop("layers")
    params["layers"] = {i: jax.tree.map(lambda a: a[i], stacked) for i in range(m.num_layers)}
  state = nnx.state(loop, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(loop, state)
  prompts = [[5, 9, 77, 3], [100, 2]]
  out, n = generate(model, prompts, 5, eos_id=None)
  ref, _ = generate(loop, prompts, 5, eos_id=None)
  assert list(n) == [5, 5]
  np.testing.assert_array_equal(out, ref)


def test_cheap_prefill_leaves_the_same_cache_as_decoding_every_token():
  m = tiny("phd_swa", 3, 3)
  _, pre, step = jitted(Transformer(m, rngs=nnx.Rngs(0)))
  toks = random_tokens(2, 12)
  _, fast = pre(toks, init_cache(m, 2, 12))
  _, slow = pre(toks[:, :1], init_cache(m, 2, 12))
  for t in range(1, 12):
    _, slow = step(toks[:, t], slow)
  for name in ("k", "v", "window_k", "window_v", "window_index", "length"):
    np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), atol=2e-5, err_msg=name)


@pytest.mark.parametrize("variant, k, w, c, truncate", [
    ("phd_cswa", 2, 3, 4, True), ("phd_swa", 3, 4, 0, True), ("phd_swa", 2, 1, 0, False),
    ("vanilla", 1, 0, 0, True), ("repeat", 2, 0, 0, True)])
def test_ragged_prompts_in_one_batch(variant, k, w, c, truncate):
  """Rows shorter than the prefill's hidden run must not read the padding (it repeats token 0,
  so only a window reaching from position 1 into it, W=4 at K=3, would show a leak)."""
  m = tiny(variant, k, w, c)
  fwd, pre, step = jitted(Transformer(m, rngs=nnx.Rngs(0)), truncate)
  toks = random_tokens(3, 14)
  full = fwd(toks)
  lengths = jnp.array([2, 9, 6])  # row 0 is shorter than the hidden run of phd_swa
  logits, cache = pre(toks[:, :10], init_cache(m, 3, 14), lengths)
  rows = jnp.arange(3)
  np.testing.assert_allclose(logits, full[rows, lengths - 1], atol=2e-5)
  for _ in range(3):
    logits, cache = step(toks[rows, cache.length], cache)
    np.testing.assert_allclose(logits, full[rows, cache.length - 1], atol=2e-5)


def test_cache_bytes():
  vanilla = cache_bytes(tiny("vanilla", 1), 2, 64)
  m = tiny("vanilla", 1)
  per_token = 2 * m.num_layers * m.num_kv_heads * m.head_dim * 4  # K and V, float32
  assert vanilla == 2 * 64 * per_token
  assert cache_bytes(tiny("phd", 3), 2, 64) == vanilla
  assert cache_bytes(tiny("phd_swa", 3, 16), 2, 64) == vanilla + 2 * 16 * per_token
  assert cache_bytes(tiny("phd_cswa", 2, 16, 32), 2, 64) == vanilla + 2 * 16 * per_token
  assert cache_bytes(tiny("repeat", 3), 2, 64) == 3 * vanilla


@pytest.mark.parametrize("variant, k, w, c", [("phd_cswa", 2, 3, 4), ("repeat", 2, 0, 0)])
def test_greedy_generate_is_repeated_argmax_of_the_forward_pass(variant, k, w, c):
  model = Transformer(tiny(variant, k, w, c), rngs=nnx.Rngs(0))
  fwd = jitted(model)[0]
  prompts = [[5, 9, 77, 3], [100, 2]]
  out, n = generate(model, prompts, 6, eos_id=None)
  assert list(n) == [6, 6]
  for row, prompt in enumerate(prompts):
    seq = list(prompt)
    for _ in range(6):  # padded to one length (one compilation): causal, so the pad is unread
      padded = jnp.asarray([seq + [0] * (10 - len(seq))], jnp.int32)
      seq.append(int(jnp.argmax(fwd(padded)[0, len(seq) - 1])))
    assert list(out[row]) == seq[len(prompt):]


def test_generate_stops_at_eos():
  model = Transformer(tiny("phd", 2), rngs=nnx.Rngs(0))
  sample = dict(temperature=1.0, seed=3)  # same seed: same tokens until the end marker
  first, _ = generate(model, [[1, 2, 3]], 6, eos_id=None, **sample)
  first = [int(t) for t in first[0]]
  # The first sampled token that did not occur before it becomes the end marker.
  stop = next(i for i, t in enumerate(first) if i > 0 and t not in first[:i])
  out, n = generate(model, [[1, 2, 3]], 6, eos_id=first[stop], **sample)
  assert int(n[0]) == stop
  assert list(out[0, :stop]) == first[:stop] and list(out[0, stop:]) == [first[stop]] * (6 - stop)


def test_top_k_and_top_p_never_sample_outside_the_allowed_set():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 50)) * 3, jnp.float32)
  keys = jax.random.split(jax.random.key(0), 300)
  top_k = jax.vmap(lambda key: sample_logits(logits, key, 1.0, top_k=5))(keys)  # [300, 4]
  allowed_k = np.argsort(-np.asarray(logits), axis=1)[:, :5]
  assert all(set(top_k[:, r].tolist()) <= set(allowed_k[r]) for r in range(4))
  top_p = jax.vmap(lambda key: sample_logits(logits, key, 1.0, top_p=0.6))(keys)
  assert max(len(set(top_p[:, r].tolist())) for r in range(4)) > 1  # the cut is not greedy
  for r in range(4):
    order = np.argsort(-np.asarray(logits[r]))
    probs = np.asarray(jax.nn.softmax(logits[r]))[order]
    smallest = int(np.searchsorted(np.cumsum(probs), 0.6) + 1)  # fewest tokens reaching 0.6
    allowed = set(order[:smallest].tolist())
    assert set(top_p[:, r].tolist()) <= allowed


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompts=[[]], max_new_tokens=3), "empty prompt"),
    (dict(prompts=[[1, 2, 3]], max_new_tokens=-1), "max_new_tokens"),
    (dict(prompts=[[1, 2, 3]], max_new_tokens=2, top_p=0.0), "top_p"),
    (dict(prompts=[[1, 2, 3]], max_new_tokens=2, top_p=1.5), "top_p"),
    (dict(prompts=[[1, 2, 3]], max_new_tokens=4, max_len=5), "exceeds max_len"),
])
def test_bad_generate_input_is_refused(kwargs, match):
  model = Transformer(tiny("phd", 2), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=match):
    generate(model, eos_id=None, **kwargs)


def test_prompt_longer_than_the_cache_is_refused():
  m = tiny("phd", 2)
  model = Transformer(m, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="longer than the cache"):
    prefill(model, random_tokens(1, 9), init_cache(m, 1, 8))
