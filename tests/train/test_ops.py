"""Training operations: preemption, divergence, TensorBoard, MFU, profiling, accumulation,
workdirs."""
import glob
import os
import signal
import time

import jax
import numpy as np
import pytest
from flax import nnx
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from phd_jax.checkpoints.checkpoint import Checkpointer
from phd_jax.checkpoints.load import load_run
from phd_jax.config import validate_config
from phd_jax.data import text, tokenizers, windows
from phd_jax.model import flops
from phd_jax.model.losses import lm_loss
from phd_jax.train.grad_accum import loss_and_grads
from phd_jax.train.guard import DivergenceError
from phd_jax.train.loop import train_and_evaluate
from phd_jax.train.state import create_state
from tests import commands
from tests.helpers import LONG_RUN, RESUMABLE_RUN, losses, tiny_config, tiny_flags


@pytest.mark.integration
def test_sigterm_saves_exits_0_and_rerun_matches_uninterrupted(corpus_glob, trained_runs,
                                                               tmp_path):
  steps = LONG_RUN["steps"]
  cmd = [commands.installed("phd-train"), f"--workdir={tmp_path / 'preempted'}",
         *tiny_flags(corpus_glob, **LONG_RUN)]
  proc = commands.start(cmd)
  try:
    deadline = time.time() + 300
    for line in proc.stdout:  # wait until a few steps are done, then preempt
      if line.startswith("step      3/") or time.time() > deadline:
        break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == 0, err[-3000:]
  saved = [l for l in out.splitlines() if l.startswith("preempted by SIGTERM")]
  assert saved and "saved a checkpoint at step" in saved[0], out[-2000:]
  stopped = int(saved[0].split("at step ")[1].split()[0])
  assert 3 <= stopped < steps
  assert Checkpointer(str(tmp_path / "preempted"), 2).latest_step() == stopped  # data iter too
  rerun = commands.run(cmd)
  assert f"resumed from step {stopped}" in rerun.stdout
  assert "val_bits_per_byte=" in rerun.stdout.strip().splitlines()[-1]
  a = losses(trained_runs(tiny_config(corpus_glob, **LONG_RUN)))  # the same run, uninterrupted
  b = losses(tmp_path / "preempted")
  assert sorted(b) == list(range(1, steps + 1))
  np.testing.assert_allclose([b[s] for s in sorted(a)], [a[s] for s in sorted(a)], rtol=1e-6)


@pytest.mark.integration
def test_sigint_in_process_stops_after_the_step_with_a_checkpoint(corpus_glob, tmp_path):
  cfg = tiny_config(corpus_glob, **RESUMABLE_RUN)  # 8 steps
  before = signal.getsignal(signal.SIGINT)
  interrupt = lambda step: os.kill(os.getpid(), signal.SIGINT) if step == 3 else None
  summary = train_and_evaluate(cfg, str(tmp_path), on_step=interrupt)
  assert summary == {"step": 4, "preempted": True}  # the signal is seen after the next step
  assert signal.getsignal(signal.SIGINT) is before  # handlers restored
  assert Checkpointer(str(tmp_path), 2).latest_step() == 4


@pytest.mark.integration
def test_divergence_stops_naming_the_step_and_keeps_the_last_good_checkpoint(corpus_glob,
                                                                            tmp_path):
  cfg = tiny_config(corpus_glob, steps=8, learning_rate=1e30, checkpoint_every=2)
  with pytest.raises(DivergenceError, match=r"diverged at step 3: grad_norm=nan, loss=nan.*"
                     r"last good checkpoint \(step 2\)"):
    train_and_evaluate(cfg, str(tmp_path))
  model, _, step = load_run(str(tmp_path))
  assert step == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(nnx.state(model)))


@pytest.mark.integration
def test_tensorboard_profile_and_mfu_fields(corpus_glob, tmp_path):
  cfg = tiny_config(corpus_glob, steps=4, val_every=2, profile_steps=(2, 4),
                    grad_accum_steps=2)  # the jitted step with microbatches, end to end
  train_and_evaluate(cfg, str(tmp_path))
  events = EventAccumulator(str(tmp_path / "tb"))
  events.Reload()
  tags = events.Tags()["scalars"]
  for tag in ("loss", "ce", "grad_norm", "learning_rate", "tokens_per_s", "tflops_per_s",
              "val_bits_per_byte"):
    assert tag in tags, tags
  got = {e.step: e.value for e in events.Scalars("loss")}
  np.testing.assert_allclose([got[s] for s in range(1, 5)],
                             [losses(tmp_path)[s] for s in range(1, 5)], rtol=1e-6)
  assert [e.step for e in events.Scalars("val_bits_per_byte")] == [2, 4]
  assert "mfu" not in tags  # a CPU has no peak in the table; TFLOP/s are still logged
  traces = glob.glob(str(tmp_path / "profile" / "**" / "*.xplane.pb"), recursive=True)
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  assert step_markers(traces[0]) == [2, 3]  # one per profiled step: steps start..stop-1


def step_markers(trace: str) -> list[int]:
  """The step numbers of the "train" step markers (jax.profiler.StepTraceAnnotation) in an
  XSpace trace, read with jax's own reader: what XProf splits the profile into steps by."""
  events = [e for plane in jax.profiler.ProfileData.from_file(trace).planes
            for line in plane.lines for e in line.events if e.name == "train"]
  return sorted(int(dict(e.stats)["step_num"]) for e in events)


def test_peak_table_and_throughput():
  assert flops.peak_flops("TPU v5 lite") == 197e12
  assert flops.peak_flops("TPU v5p") == flops.peak_flops("TPU v5") == 459e12
  assert flops.peak_flops("TPU v4") == 275e12 and flops.peak_flops("TPU v6 lite") == 918e12
  assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.peak_flops("NVIDIA H100 PCIe") == 756e12
  assert flops.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
  assert flops.peak_flops("NVIDIA H200") == 989e12
  assert flops.peak_flops("cpu") is None
  cfg = tiny_config("unused")

  class Dev:
    device_kind = "TPU v4"
  tp = flops.Throughput(cfg, [Dev()] * 4)
  row = tp(2.0)  # steps per second
  assert row["tflops_per_s"] == pytest.approx(2 * flops.step_flops(cfg) / 1e12)
  assert row["mfu"] == pytest.approx(2 * flops.step_flops(cfg) / (4 * 275e12))


def test_grad_accumulation_4x2_equals_batch_8(corpus_glob):
  cfg = tiny_config(corpus_glob, batch_size=8)
  corpus = text.load_corpus(cfg.data)
  batches = iter(windows.train_dataset(corpus.train, 32, 8, seed=0))
  batch = {k: np.asarray(v) for k, v in next(batches).items()}
  model = nnx.merge(*create_state(cfg))[0]
  grads = lambda t: jax.jit(lambda b: loss_and_grads(lm_loss, model, b, t))(batch)
  one = grads(cfg.train.copy_and_resolve_references())
  cfg.train.grad_accum_steps = 4
  four = grads(cfg.train)
  np.testing.assert_allclose(four[0], one[0], rtol=1e-6)
  np.testing.assert_allclose(four[1]["ce"], one[1]["ce"], rtol=1e-6)
  leaves = list(zip(jax.tree.leaves(four[2]), jax.tree.leaves(one[2])))
  assert len(leaves) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
  for a, b in leaves:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  assert max(float(np.abs(b).max()) for _, b in leaves) > 1e-3  # not all zeros


@pytest.mark.parametrize("field, value, match", [
    ("grad_accum_steps", 3, "must divide config.train.batch_size=4"),
    ("grad_accum_steps", 0, "expected an int >= 1"),
    ("profile_steps", (4, 2), "0 <= start <= stop"),
    ("profile_steps", (1, 2, 3), "expected \\(start, stop\\)"),
])
def test_bad_ops_config(field, value, match):
  cfg = tiny_config("unused")
  cfg.train[field] = value
  with pytest.raises(ValueError, match=rf"config\.train\.{field}=.*{match}"):
    validate_config(cfg, tokenizers.ByteTokenizer.vocab_size)


@pytest.mark.integration
def test_bad_workdirs_are_refused_clearly(corpus_glob, tmp_path):
  cfg = tiny_config(corpus_glob, steps=1)
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    train_and_evaluate(cfg, str(a_file))
  foreign = tmp_path / "foreign"
  (foreign / "checkpoints" / "100").mkdir(parents=True)
  (foreign / "checkpoints" / "100" / "model.safetensors").write_text("")
  with pytest.raises(ValueError, match="not a phd_jax checkpoint.*another program"):
    train_and_evaluate(cfg, str(foreign))
  if os.geteuid() != 0:  # root writes anywhere
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ValueError, match="is not writable"):
      train_and_evaluate(cfg, str(locked))
  cli = commands.phd("phd-train", "--config=configs/model_tiny.py", f"--workdir={a_file}",
                     expect=None)
  assert cli.returncode != 0 and "Traceback" not in cli.stderr
  assert f"error: --workdir {a_file} is a file" in cli.stderr
