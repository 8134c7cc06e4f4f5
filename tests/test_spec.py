"""PHDSpec's answers against the variant definitions of docs/method.md, written out here."""
import jax
import pytest

from configs import model_tiny
from phd_jax.model.kv_cache import init_cache
from phd_jax.spec import VARIANTS, PHDSpec

# docs/method.md, "Visibility rules" and "KV cache at inference", one row per variant:
# (rule W, rule C, causal over the interleaved order, the cache keeps every copy).
DEFINITIONS = {
    "vanilla": (False, False, False, False),
    "phd": (False, False, False, False),
    "phd_swa": (True, False, False, False),
    "phd_cswa": (True, True, False, False),
    "repeat": (False, False, True, True),
}
EXAMPLES = {"vanilla": PHDSpec("vanilla", 1), "phd": PHDSpec("phd", 3),
            "phd_swa": PHDSpec("phd_swa", 3, window=4),
            "phd_cswa": PHDSpec("phd_cswa", 3, window=4, chunk=2), "repeat": PHDSpec("repeat", 3)}


def test_every_variant_is_defined_here():
  assert set(DEFINITIONS) == set(VARIANTS) == set(EXAMPLES)


@pytest.mark.parametrize("variant", VARIANTS)
def test_properties_match_the_definitions(variant):
  spec = EXAMPLES[variant]
  window, chunk, interleaved, every_copy = DEFINITIONS[variant]
  assert (spec.has_window, spec.chunked, spec.interleaved_causal, spec.caches_every_copy) == (
      window, chunk, interleaved, every_copy)
  assert spec.cache_slots_per_position == (spec.num_copies if every_copy else 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_window_and_chunk_fields_follow_the_rules(variant):
  """A window is required exactly where rule W applies, a chunk exactly where rule C does."""
  window, chunk, _, _ = DEFINITIONS[variant]
  k = 1 if variant == "vanilla" else 2
  with pytest.raises(ValueError, match="window"):
    PHDSpec(variant, k, window=0 if window else 3, chunk=2 if chunk else 0)
  if window:
    with pytest.raises(ValueError, match="chunk"):
      PHDSpec(variant, k, window=3, chunk=0 if chunk else 2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cache_has_the_slots_the_spec_names(variant):
  """init_cache allocates cache_slots_per_position global entries per position, plus a ring of W
  hidden tokens where rule W applies (docs/method.md's cache table)."""
  spec = EXAMPLES[variant]
  m = model_tiny.get_config().model
  m.phd.update(variant=variant, num_copies=spec.num_copies, window=spec.window, chunk=spec.chunk)
  cache = jax.eval_shape(lambda: init_cache(m, 2, 10))
  slots = {"vanilla": 10, "phd": 10, "phd_swa": 10, "phd_cswa": 10, "repeat": 30}[variant]
  assert cache.k.shape[2] == slots == 10 * spec.cache_slots_per_position
  assert cache.window_k.shape[2] == (4 if spec.has_window else 0)
