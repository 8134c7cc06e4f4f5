"""One config on 1 and 8 (simulated CPU) devices: same losses, rule-given shardings, resharding."""
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
import pytest
from flax import nnx

from phd_jax.checkpoints.load import load_run
from phd_jax.config.mesh import batch_shards, mesh_shape
from phd_jax.inference.decode import generate
from phd_jax.train.state import create_state
from tests import commands
from tests.helpers import PROMPTS, WIDE_RUN, losses, tiny_config
from tests.storage import free_port

HERE = os.path.dirname(os.path.abspath(__file__))


def test_mesh_shape_and_errors():
  cfg = tiny_config("unused").mesh
  assert mesh_shape(cfg, 8) == (8, 1, 1)
  cfg.update(data=-1, fsdp=2, tensor=2)
  assert mesh_shape(cfg, 8) == (2, 2, 2)
  cfg.update(data=3, fsdp=1, tensor=1)
  with pytest.raises(ValueError, match="config.mesh"):
    mesh_shape(cfg, 8)
  cfg.update(data=-1, fsdp=-1)
  with pytest.raises(ValueError, match="only one"):
    mesh_shape(cfg, 8)
  cfg.update(data=-1, fsdp=2, tensor=2)
  assert batch_shards(cfg, 8) == 4  # batch -> (data, fsdp)


@pytest.mark.integration
def test_eight_devices_match_one(corpus_glob, trained_runs, tmp_path):
  single_run = trained_runs(tiny_config(corpus_glob, **WIDE_RUN))  # 4 steps, batch 8, 1 device
  single = losses(single_run)
  run = commands.script(os.path.join(HERE, "multidevice_worker.py"), corpus_glob,
                        tmp_path / "multi", timeout=900,
                        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  line = next(l for l in run.stdout.splitlines() if l.startswith("RESULTS "))
  res = json.loads(line[len("RESULTS "):])
  assert res["devices"] == 8
  expect = [single[s] for s in range(1, 5)]
  for name in ("8x1x1", "2x2x2", "1x4x2", "moved"):
    got = [res[name][str(s)] for s in range(1, 5)]
    np.testing.assert_allclose(got, expect, rtol=2e-5, err_msg=name)
  # The checkpoint written by 8 devices restores onto this single device, for inference.
  from_8, _, step = load_run(str(tmp_path / "multi" / "8x1x1"))
  from_1, _, _ = load_run(str(single_run))
  assert step == 4
  for a, b in zip(jax.tree.leaves(nnx.state(from_8)), jax.tree.leaves(nnx.state(from_1))):
    assert len(a.sharding.device_set) == 1
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert res["pallas_sharded_err"] < 1e-5
  assert res["accum_err"] < 1e-4  # 4 microbatches on a 2x2x2 mesh == one batch on 1 device
  model = nnx.merge(*create_state(tiny_config(corpus_glob, batch_size=8)))[0]  # 1 device
  np.testing.assert_array_equal(res["generated"], generate(model, PROMPTS, 6, eos_id=None)[0])
  # q_proj is (embed, heads) -> (fsdp, tensor); the embedding (vocab, embed) -> (tensor, fsdp).
  assert res["2x2x2_specs"] == ["P('fsdp', 'tensor')", "P('tensor', 'fsdp')"]


def _two_processes(corpus_glob: str, workdir: str, *extra: str) -> list[dict]:
  """Runs multiprocess_worker.py as processes 0 and 1; returns each one's RESULTS (or None)."""
  port = free_port()
  procs = [commands.start([sys.executable, os.path.join(HERE, "multiprocess_worker.py"),
                           corpus_glob, workdir, port, i, *extra],
                          env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
           for i in range(2)]
  try:  # both drained at once: a process whose pipe fills (64 KiB of logs) would stall, and the
    # other time out at the shutdown barrier, if one were read only after the other exited
    with ThreadPoolExecutor(2) as pool:
      outs = list(pool.map(lambda p: p.communicate(timeout=600), procs))
  finally:  # never leave a process behind, whatever happened
    for p in procs:
      p.kill()
      p.wait()
  codes = [p.returncode for p in procs]
  assert codes == [0, 0], "\n".join(f"--- process {i} exited {c}:\n{err[-4000:]}"
                                     for i, (c, (_, err)) in enumerate(zip(codes, outs)))
  lines = [[l for l in out.splitlines() if l.startswith("RESULTS ")] for out, _ in outs]
  return [json.loads(l[0][len("RESULTS "):]) if l else None for l in lines]


@pytest.mark.integration
def test_two_processes_match_one(corpus_glob, trained_runs, tmp_path, gs_url):
  """jax.distributed on 127.0.0.1, 2 processes x 4 CPU devices, gloo collectives, both hosts
  checkpointing into one bucket (the GCS emulator), as on a pod; then restored onto one device."""
  single_run = trained_runs(tiny_config(corpus_glob, **WIDE_RUN))  # 4 steps, batch 8, 1 device
  single = losses(single_run)
  multi = f"{gs_url}/{tmp_path.name}/multi"
  res = _two_processes(corpus_glob, multi)[0]
  assert (res["devices"], res["processes"]) == (8, 2)
  np.testing.assert_allclose([res["losses"][str(s)] for s in range(1, 5)],
                             [single[s] for s in range(1, 5)], rtol=2e-5)
  assert res["val_restored"] == pytest.approx(res["val"], rel=1e-6)
  from_2, _, step = load_run(multi)  # 8 devices of 2 hosts -> this process's one device
  from_1, _, _ = load_run(str(single_run))
  assert step == 4
  for a, b in zip(jax.tree.leaves(nnx.state(from_2)), jax.tree.leaves(nnx.state(from_1))):
    assert len(a.sharding.device_set) == 1
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.integration
def test_sigterm_on_one_host_stops_both_at_one_step(corpus_glob, tmp_path):
  """JAX's preemption sync manager: process 1 gets SIGTERM; both save the same step, exit 0."""
  first, second = _two_processes(corpus_glob, str(tmp_path / "multi"), "preempt")
  assert first["summary"]["preempted"] and second["summary"]["preempted"]
  stop = first["summary"]["step"]
  assert second["summary"]["step"] == stop and 3 < stop < 300
  assert first["latest"] == second["latest"] == stop


@pytest.mark.integration
def test_node_local_tier_on_two_hosts_uses_a_step_only_every_host_holds(corpus_glob, tmp_path):
  """Two processes, each with its own node-local folder (checkpoints/tiers.py): a step both hold
  restores, each host from its own disk; one host without its folder makes both resume from the
  workdir and the other drop its newer step; a state sharded across the hosts is refused."""
  first, second = _two_processes(corpus_glob, str(tmp_path / "run"), "tiers",
                                 str(tmp_path / "local"))
  for res in (first, second):
    assert res["starts"] == [0, 4, 3]  # new; node-local 4 on both hosts; workdir 3
    assert res["both"] == [2, 4]
    assert "needs a whole copy of the training state on every host" in res["refused"]
  assert first["after"] == [2, 4] and second["after"] == [4]  # 4 dropped on host 0, saved again
