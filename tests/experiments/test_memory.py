"""The sharded train step compiles on 8 simulated devices without full rematerialization, and
`python -m experiments.memory_per_device` reports its compiled memory."""
import pytest

from tests import commands


@pytest.mark.integration
def test_sharded_step_compiles_without_full_rematerialization():
  # data x fsdp x tensor = 2 x 2 x 2: the embedding is split on vocab (tensor) and embed (fsdp)
  # while the batch is split on (data, fsdp); the gather used to force a full replication.
  run = commands.module(  # the script sets the device count from the mesh: none here
      "experiments.memory_per_device", "--config=configs/model_tiny.py:phd_cswa", "--data=2",
      "--fsdp=2", "--tensor=2", "--seq_len=64", "--config.train.loss_chunk=16", timeout=600,
      env={"XLA_FLAGS": ""})
  assert "Involuntary full rematerialization" not in run.stderr, run.stderr[-3000:]
  line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))
  got = dict(kv.split("=") for kv in line.split()[1:])
  assert float(got["temporaries"]) > 0 and float(got["arguments"]) > 0
  assert float(got["peak"]) >= float(got["arguments"])
