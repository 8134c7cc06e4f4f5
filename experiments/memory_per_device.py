"""Memory per device of the real train step, compiled (not run) for a config on a mesh.

The step is lowered on simulated CPU devices of the requested mesh shape (the device count is set
before JAX starts) with abstract inputs, so nothing the size of the model is ever allocated, and
XLA's `memory_analysis()` of the compiled SPMD program gives the per-device bytes: arguments
(parameters, optimizer state, batch), outputs, and temporaries (activations, gradients,
collectives' buffers). Beside them, the analytic parameter and optimizer bytes of the sharding
rules. Compiling a 1.2B step takes minutes and a few GB of host RAM.

  python -m experiments.memory_per_device --config=configs/model_1_2b.py:phd_cswa \\
      --data=1 --fsdp=16 --tensor=1            # batch: one sequence per batch shard

CPU compiles are a proxy for TPU/GPU ones: the same program and shardings, another backend's
fusion and scheduling, so expect figures of the same size, not identical ones.
"""
from __future__ import annotations

import math
import os
import re
import sys


def _set_device_count(argv: list[str]) -> None:
  """--data/--fsdp/--tensor (`--data=2` or `--data 2`) -> XLA_FLAGS, before jax is imported.

  The flags proper are parsed (and checked) by absl later; this only reads the mesh's size.
  """
  sizes = {"data": 1, "fsdp": 1, "tensor": 1}
  for arg, following in zip(argv, argv[1:] + [""]):
    m = re.fullmatch(r"--?(data|fsdp|tensor)(?:=(\d+))?", arg)
    value = m and (m.group(2) or following)
    if value and value.isdigit():
      sizes[m.group(1)] = max(1, int(value))
  flag = f"--xla_force_host_platform_device_count={math.prod(sizes.values())}"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


if __name__ == "__main__":
  _set_device_count(sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import flags  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import AxisType  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import cli  # noqa: E402
from phd_jax.cli import common  # noqa: E402
from phd_jax.config.mesh import MESH_AXES, rules  # noqa: E402
from phd_jax.model import sharding  # noqa: E402
from phd_jax.train.state import init_train_objects, make_train_step  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/model_550m.py", "Config file.")
_DATA = flags.DEFINE_integer("data", 1, "Mesh size of the data axis.")
_FSDP = flags.DEFINE_integer("fsdp", 1, "Mesh size of the fsdp axis.")
_TENSOR = flags.DEFINE_integer("tensor", 1, "Mesh size of the tensor axis.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Global batch size (0: one sequence per "
                                   "batch shard, data x fsdp).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 0, "Sequence length (0: the config's).")

GIB = 2 ** 30


def _shard_bytes(state, shardings) -> int:
  return sum(jax.tree.leaves(jax.tree.map(
      lambda x, s: math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize, state, shardings)))


def compiled_memory(cfg, shape: tuple[int, int, int]) -> dict[str, float]:
  """Per-device bytes of the train step of `cfg` compiled on a (data, fsdp, tensor) mesh."""
  mesh = jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=jax.devices()[:math.prod(shape)])
  axis_rules = rules(cfg.mesh)
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: init_train_objects(cfg)))
  state_sh = sharding.state_shardings(abstract, mesh, axis_rules)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       abstract, state_sh)
  batch_sh = sharding.batch_sharding(mesh, axis_rules)
  shape_bl = (cfg.train.batch_size, cfg.train.seq_len)
  batch = {k: jax.ShapeDtypeStruct(shape_bl, jnp.int32, sharding=batch_sh)
           for k in ("inputs", "targets")}
  train_step = make_train_step(graphdef, cfg.train, state_sh, batch_sh)
  with sharding.activate(mesh, axis_rules):
    compiled = train_step.lower(state, batch).compile()
  ma = compiled.memory_analysis()
  model_state, opt_state = abstract[0], abstract[1]
  model_sh, opt_sh = state_sh[0], state_sh[1]
  args = ma.argument_size_in_bytes
  return {
      "params (analytic)": _shard_bytes(model_state, model_sh),
      "optimizer (analytic)": _shard_bytes(opt_state, opt_sh),
      "arguments (compiled)": args,
      "temporaries (compiled)": ma.temp_size_in_bytes,
      "peak = arguments + temporaries + outputs - aliased": (
          args + ma.temp_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes),
  }


def main(argv: list[str]) -> None:
  cli.no_positional(argv)
  cfg = _CONFIG.value
  shape = (cli.at_least(_DATA, 1), cli.at_least(_FSDP, 1), cli.at_least(_TENSOR, 1))
  # default rules: the batch is split on both data and fsdp
  cfg.train.batch_size = cli.at_least(_BATCH_SIZE, 0) or shape[0] * shape[1]
  if cli.at_least(_SEQ_LEN, 0):
    cfg.train.seq_len = _SEQ_LEN.value
  cfg.mesh.update(data=shape[0], fsdp=shape[1], tensor=shape[2])
  m = cfg.model
  print(f"{m.num_layers} layers d={m.d_model}, {m.phd.variant} K={m.phd.num_copies}, "
        f"attention_impl={m.attention_impl}, remat={m.remat}; mesh data={shape[0]} "
        f"fsdp={shape[1]} tensor={shape[2]}; batch {cfg.train.batch_size} x seq_len "
        f"{cfg.train.seq_len}; loss_chunk={cfg.train.loss_chunk}, xla_block={m.xla_block}",
        flush=True)
  rows = compiled_memory(cfg, shape)
  for name, b in rows.items():
    print(f"  {name:<52}{b / GIB:8.2f} GiB per device")
  print("RESULT " + " ".join(f"{k.split(' ')[0]}={int(v)}" for k, v in rows.items()))  # bytes


if __name__ == "__main__":
  common.launch(main)
