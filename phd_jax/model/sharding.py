"""Meshes, logical axis rules and shardings: one config from one CPU to many hosts.

Parameters carry logical axis names (`embed`, `heads`, `mlp`, ...); `cfg.mesh.rules` maps them
to the mesh axes `data`, `fsdp`, `tensor`. Changing the mesh changes no model code.
"""
from __future__ import annotations

import contextlib

import flax.core.spmd as core_spmd
import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from phd_jax.config.mesh import MESH_AXES, mesh_shape


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           auto: bool = False) -> None:
  """Starts JAX's multi-controller runtime: every host runs the same command.

  TPU pods (and SLURM/Open MPI clusters) detect their peers: pass auto=True. Elsewhere, give the
  coordinator (host:port of process 0), the number of processes and this process's id. CPU-only
  clusters exchange collectives over gloo.
  """
  if not (auto or coordinator_address):
    return
  if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if auto:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh(mesh_cfg: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  shape = mesh_shape(mesh_cfg, jax.device_count())
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh, axis_rules: tuple):
  """The mesh and the logical rules, for tracing steps that constrain activations."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(axis_rules):
    yield


def logical_spec(names: tuple) -> PartitionSpec:
  return PartitionSpec(*core_spmd.from_sharding_rules(names, core_spmd.get_logical_axis_rules()))


def constrain(x: jax.Array, names: tuple) -> jax.Array:
  """Pins an activation's sharding by logical names; a no-op without a mesh and rules."""
  if not core_spmd.get_logical_axis_rules() or jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_spec(names))


def state_shardings(abstract_state, mesh: jax.sharding.Mesh, axis_rules: tuple):
  """NamedShardings of a (model, optimizer) state from its parameters' logical names."""
  with nnx.logical_axis_rules(axis_rules):
    specs = nnx.get_partition_spec(abstract_state)
  return jax.tree.map(lambda p: NamedSharding(mesh, p), specs)


def batch_sharding(mesh: jax.sharding.Mesh, axis_rules: tuple) -> NamedSharding:
  with nnx.logical_axis_rules(axis_rules):
    return NamedSharding(mesh, logical_spec(("batch", "length")))


def global_batch(local: dict, sharding: NamedSharding) -> dict:
  """This host's rows -> global arrays laid out across every host's devices."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}
