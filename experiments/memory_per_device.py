"""Bytes per device of parameters, optimizer state and activations, for a config and a mesh.

No devices needed: shardings are worked out on an abstract mesh of the requested shape.

  python experiments/memory_per_device.py --config=configs/model_1_2b.py:phd_cswa \
      --data=16 --fsdp=16 --tensor=1 --batch_size=256

Activations are an estimate (stated below), the rest is exact for the sharding rules in the config.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from ml_collections import config_flags

from phd_jax import sharding
from phd_jax.config import validate_model_config
from phd_jax.train import init_train_objects


def per_device_bytes(cfg, shape: tuple[int, int, int]) -> dict[str, float]:
  mesh = AbstractMesh(shape, sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)
  abstract = nnx.eval_shape(lambda: init_train_objects(cfg))
  model_state = nnx.state(abstract[0])
  opt_state = nnx.state(abstract[1])
  with nnx.logical_axis_rules(sharding.rules(cfg.mesh)):
    specs = [nnx.get_partition_spec(s) for s in (model_state, opt_state)]

  def shard_bytes(state, spec):
    leaves = jax.tree.leaves(state)
    spec_leaves = jax.tree.leaves(spec, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    return sum(math.prod(NamedSharding(mesh, p).shard_shape(x.shape)) * x.dtype.itemsize
               for x, p in zip(leaves, spec_leaves))

  m, t = cfg.model, cfg.train
  spec = validate_model_config(m)
  tokens = t.batch_size * spec.num_tokens(t.seq_len) // (shape[0] * shape[1])  # per device
  act = np.dtype(m.dtype).itemsize
  # Saved for the backward pass, per layer: the block input and (without remat) the
  # projections, MLP hidden and the attention probabilities of the xla path (K*L x L per
  # head: K times vanilla's), with heads and MLP split over `tensor`.
  width = m.d_model + (m.num_heads + 2 * m.num_kv_heads) * m.head_dim / shape[2] \
      + 3 * m.mlp_dim / shape[2]
  scores = 4 * m.num_heads / shape[2] * t.seq_len  # f32 probabilities per token
  per_layer = tokens * m.d_model * act if m.remat else tokens * (width * act + scores)
  return {"params": shard_bytes(model_state, specs[0]),
          "optimizer": shard_bytes(opt_state, specs[1]),
          "activations (estimate)": per_layer * m.num_layers}


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  cfg = f.config
  if f.batch_size:
    cfg.train.batch_size = f.batch_size
  shape = (f.data, f.fsdp, f.tensor)
  rows = per_device_bytes(cfg, shape)
  print(f"mesh data={shape[0]} fsdp={shape[1]} tensor={shape[2]} ({math.prod(shape)} devices), "
        f"batch {cfg.train.batch_size} x seq_len {cfg.train.seq_len}, K={cfg.model.phd.num_copies}, "
        f"remat={cfg.model.remat}")
  for name, b in rows.items():
    print(f"  {name:<24}{b / 2**30:10.2f} GiB per device")
  print(f"  {'total':<24}{sum(rows.values()) / 2**30:10.2f} GiB per device")


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", "configs/model_550m.py", "Config file.")
  flags.DEFINE_integer("data", 1, "Mesh size of the data axis.")
  flags.DEFINE_integer("fsdp", 1, "Mesh size of the fsdp axis.")
  flags.DEFINE_integer("tensor", 1, "Mesh size of the tensor axis.")
  flags.DEFINE_integer("batch_size", 0, "Global batch size (0: the config's).")
  app.run(main)
