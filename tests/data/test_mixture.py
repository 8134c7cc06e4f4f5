"""Data mixtures, at the level of the data: shares, schedules, hosts, epochs, the iterator's
checkpointed position, and every bad mixture refused before the model is built."""
import json
import math

import grain
import numpy as np
import pytest

from phd_jax.data import mixture, sampling, windows
from tests.data.mixture_sources import make_sources
from tests.helpers import tiny_config

SEQ = 4
BASE = 100_000  # source k's tokens are k * BASE + their index: a window's first id names both


def synthetic(lengths):
  """Sources of `lengths[k]` windows each (seq_len SEQ) whose ids say which source and window."""
  return [windows.Windows(k * BASE + np.arange(n * SEQ + 1), SEQ) for k, n in enumerate(lengths)]


def iterator(lengths, weights, schedule=(), batch=16, seed=0, host=0, hosts=1):
  names = [f"s{k}" for k in range(len(lengths))]
  plan = sampling.Plan(names, lengths, weights, schedule, batch, seed)
  return sampling.MixtureIterator(plan, synthetic(lengths), host, hosts,
                                  {"weights": weights, "schedule": list(schedule)})


def sources_of(batch):  # [rows] the source of each row
  return batch["inputs"][:, 0] // BASE


def windows_of(batch):  # [rows] the window of each row within its source
  return batch["inputs"][:, 0] % BASE // SEQ


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return make_sources(tmp_path_factory.mktemp("mixture"))


def test_shares_lie_within_four_standard_errors_and_within_one_window():
  weights, steps, batch = [5.0, 3.0, 2.0], 150, 16  # 2,400 windows
  it = iterator([300, 200, 50], weights, batch=batch)
  counts, worst = np.zeros(3), 0.0
  for b in range(1, steps + 1):
    counts += np.bincount(sources_of(next(it)), minlength=3)
    target = b * batch * np.array(weights) / sum(weights)
    worst = max(worst, float(np.abs(counts - target).max()))
  n = steps * batch
  for k, w in enumerate(weights):
    p = w / sum(weights)
    assert abs(counts[k] / n - p) <= 4 * math.sqrt(p * (1 - p) / n), (k, counts)
  assert worst < 1  # stratified: every prefix of the stream holds each share to within a window


def test_a_schedule_changes_the_shares_at_its_step():
  weights, schedule = [5.0, 3.0, 2.0], [(51, [0.0, 3.0, 6.0])]
  plain, scheduled = iterator([300, 200, 50], weights), iterator([300, 200, 50], weights, schedule)
  after = np.zeros(3)
  for step in range(1, 201):
    a, b = next(plain), next(scheduled)
    if step <= 50:  # the same stream up to the change
      np.testing.assert_array_equal(a["inputs"], b["inputs"])
    else:
      after += np.bincount(sources_of(b), minlength=3)
  assert after[0] == 0  # weight 0 from step 51 on
  n = 150 * 16
  for k, p in ((1, 1 / 3), (2, 2 / 3)):
    assert abs(after[k] / n - p) <= 4 * math.sqrt(p * (1 - p) / n)
  assert scheduled.positions(50)["s0"] == scheduled.positions(200)["s0"] == 50 * 16 // 2


def test_every_host_count_reads_the_same_global_batches():
  whole = iterator([300, 200, 50], [5.0, 3.0, 2.0], batch=16)
  for hosts in (2, 4):
    parts = [iterator([300, 200, 50], [5.0, 3.0, 2.0], batch=16, host=h, hosts=hosts)
             for h in range(hosts)]
    for _ in range(10):
      np.testing.assert_array_equal(np.concatenate([next(p)["inputs"] for p in parts]),
                                    next(whole)["inputs"])
    whole = iterator([300, 200, 50], [5.0, 3.0, 2.0], batch=16)


def test_a_used_up_source_starts_a_new_epoch_in_a_new_order():
  it = iterator([300, 7], [3.0, 1.0], batch=8)  # the small source: 2 windows a batch
  seen, step_of = [], {}
  for step in range(1, 12):
    b = next(it)
    small = windows_of(b)[sources_of(b) == 1].tolist()
    step_of.update({len(seen) + i: step for i in range(len(small))})
    seen += small
  first, second, third = seen[:7], seen[7:14], seen[14:21]
  assert sorted(first) == sorted(second) == sorted(third) == list(range(7))
  assert first != second and second != third
  notes = it.epoch_starts(0, 11)
  assert f"source s1 was used up (7 windows); step {step_of[7]} starts its epoch 2" in notes[0]
  assert f"step {step_of[14]} starts its epoch 3" in notes[1] and len(notes) == 3
  assert it.usage(11)["data/s1/epochs"] == pytest.approx(22 / 7)
  assert it.usage(11)["data/s1/tokens"] == 22 * SEQ


def test_one_source_is_grains_shuffled_pipeline_batch_for_batch():
  source = synthetic([97])[0]
  reference = iter(grain.MapDataset.source(source).shuffle(seed=5).repeat(None)
                   .batch(8, drop_remainder=True).to_iter_dataset())  # the loader before mixtures
  ours = windows.train_dataset(source, SEQ, 8, seed=5)
  for _ in range(40):  # past three epochs
    np.testing.assert_array_equal(next(ours)["inputs"], next(reference)["inputs"])


def test_the_position_restores_exactly_across_a_schedule_change():
  args = ([300, 200, 50], [5.0, 3.0, 2.0], [(25, [1.0, 1.0, 8.0])])
  it = iterator(*args)
  for _ in range(20):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # as the checkpoint holds it
  expected = [next(it)["inputs"] for _ in range(10)]
  resumed = iterator(*args)
  resumed.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(resumed)["inputs"], e)
  assert state["positions"] == it.positions(20)


def test_a_changed_mixture_continues_each_source_where_it_was(capfd):
  it = iterator([300, 200], [1.0, 1.0])
  for _ in range(10):
    next(it)
  state, before = it.get_state(), it.positions(10)
  resumed = iterator([300, 200], [1.0, 3.0])
  resumed.set_state(state)
  assert "note: the data mixture changed since the checkpoint (step 10): weights" in \
      capfd.readouterr().err
  assert resumed.positions(10) == before
  b = next(resumed)
  assert (sources_of(b) == 1).sum() == 12  # the new weights: 1 : 3
  seen = windows_of(b)[sources_of(b) == 0]  # source 0 goes on with its epoch's order
  plan = it.plan
  np.testing.assert_array_equal(seen, [plan.window(0, p) for p in range(80, 84)])


def test_a_position_from_before_mixtures_restores_or_is_refused():
  it = iterator([97], [1.0])
  it.set_state({"next_index": 12})  # grain's state of the one-source loader
  reference = iterator([97], [1.0])
  for _ in range(12):
    next(reference)
  np.testing.assert_array_equal(next(it)["inputs"], next(reference)["inputs"])
  with pytest.raises(ValueError, match=r"one-source run's .* cannot resume as a mixture of 2"):
    iterator([97, 10], [1.0, 1.0]).set_state({"next_index": 12})


def mixture_config(sources, **fields):
  cfg = tiny_config("")
  cfg.data.update(source="mixture", text_files="")
  cfg.data.mixture = {n: {"path": p, "weight": 1.0} for n, p in sources.items()}
  for key, value in fields.items():
    cfg.data[key] = value
  return cfg


@pytest.mark.parametrize("change, message", [
    (lambda d: d.mixture.code.update(weight=-1.0),
     r"config\.data\.mixture\.code\.weight=-1\.0 is invalid: expected a positive number"),
    (lambda d: d.mixture.prose.update(weight=0.0),
     r"config\.data\.mixture\.prose\.weight=0\.0 is invalid: expected a positive number"),
    (lambda d: d.mixture.legal.__setattr__("weight", "heavy"),
     r"config\.data\.mixture\.legal\.weight='heavy' is invalid: expected a positive number"),
    (lambda d: d.__setattr__("mixture", {}),
     r"config\.data\.mixture=\{\} is invalid: data\.source='mixture' needs at least one source"),
    (lambda d: d.mixture.code.update(path="/no/such/folder"),
     r"config\.data\.mixture\.code\.path='/no/such/folder' is invalid: no such folder"),
    (lambda d: d.__setattr__("mixture_schedule", ((10, {"web": 1.0}),)),
     r"config\.data\.mixture_schedule\[0\]=\[10, \{'web': 1\.0\}\] is invalid: unknown source "
     r"'web' \(sources: code, legal, prose\)"),
    (lambda d: d.mixture.code.__setattr__("wieght", 1.0),
     r"config\.data\.mixture\.code\.wieght=1\.0 is invalid: not a field of a source"),
])
def test_bad_mixtures_fail_before_the_model_is_built(prepared, tmp_path, monkeypatch, change,
                                                    message):
  cfg = mixture_config(prepared)
  with cfg.ignore_type():
    change(cfg.data)
  _refused(cfg, tmp_path, monkeypatch, message)


def test_differing_tokenizers_and_a_missing_validation_split_are_refused(
    prepared, bpe_path, tmp_path, monkeypatch):
  from phd_jax.data import prepare
  text = tmp_path / "text"
  text.mkdir()
  for i in range(4):
    (text / f"{i}.txt").write_text("def return self\n" * 50)
  bpe = str(tmp_path / "bpe")
  prepare.prepare(input=str(text / "*.txt"), tokenizer=bpe_path, out=bpe, val_fraction=0.5,
                  progress=False)
  _refused(mixture_config({**prepared, "web": bpe}), tmp_path / "a", monkeypatch,
           r"config\.data\.mixture\.code\.path and config\.data\.mixture\.web\.path hold "
           r"different tokenizers: bytes \(fingerprint \w+\) and .*bpe\.json \(fingerprint \w+\)")
  no_val = str(tmp_path / "no_val")
  prepare.prepare(input=str(text / "*.txt"), tokenizer="bytes", out=no_val, val_fraction=0.0,
                  progress=False)
  _refused(mixture_config({**prepared, "web": no_val}), tmp_path / "b", monkeypatch,
           r"config\.data\.mixture\.web\.path='.*no_val' has no validation split \(0 held-out "
           r"tokens\)")


def _refused(cfg, workdir, monkeypatch, message):
  """The error, as one line, from phd-train's start, with the model never built."""
  from phd_jax.train import setup

  def never(*a, **k):
    raise AssertionError("the model was built before the data was checked")
  monkeypatch.setattr(setup, "create_state", never)
  with pytest.raises(ValueError, match=message) as e:
    setup.start_session(cfg, str(workdir))
  assert "\n" not in str(e.value)


def test_a_mixture_loads_with_per_source_validation_batches(prepared):
  from phd_jax.data import tokenizers
  cfg = mixture_config(prepared, mixture_schedule=((3, {"code": 2.0}),))
  data = mixture.load(cfg.data, tokenizers.ByteTokenizer(), 384, 32, 4, 2)
  assert [s.name for s in data.sources] == ["code", "legal", "prose"] and data.named
  assert {n: len(b) for n, b in data.val.items()} == {"code": 2, "legal": 2, "prose": 2}
  assert data.spec.schedule == ((3, (2.0, 1.0, 1.0)),)
  words = {n: set(" ".join(v).split()) for n, v in
           (("code", ["def return self import class"]), ("prose", ["the cat sat on a mat"]),
            ("legal", ["shall party license herein"]))}
  tok = tokenizers.ByteTokenizer()
  for name, batches in data.val.items():  # each source's split holds its own text only
    text = tok.decode(batches[0]["inputs"][0])
    assert set(text.split()[1:-1]) <= words[name], (name, text)
