"""Meshes, logical axis rules and shardings: one config from one CPU to many hosts.

Parameters carry logical axis names (`embed`, `heads`, `mlp`, ...); `cfg.mesh.rules` maps them
to the mesh axes `data`, `fsdp`, `tensor`. Changing the mesh changes no model code.
"""
from __future__ import annotations

import contextlib
import math

import flax.core.spmd as core_spmd
import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")


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


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """Sizes of (data, fsdp, tensor); one of them may be -1: it takes the remaining devices."""
  sizes = [mesh_cfg[a] for a in MESH_AXES]
  for axis, size in zip(MESH_AXES, sizes):
    if not isinstance(size, int) or (size < 1 and size != -1):
      raise ValueError(f"config.mesh.{axis}={size!r} is invalid: expected an int >= 1, or -1 "
                       "for the remaining devices")
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: only one of {MESH_AXES} may be -1 (got {sizes})")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config.mesh: {dict(zip(MESH_AXES, sizes))} does not divide "
                       f"{num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config.mesh: {dict(zip(MESH_AXES, sizes))} uses {math.prod(sizes)} "
                     f"devices, but {num_devices} are available")
  return tuple(sizes)


def batch_shards(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> int:
  """Into how many pieces the rules cut the batch (the product of its mesh axes)."""
  sizes = dict(zip(MESH_AXES, mesh_shape(mesh_cfg, num_devices)))
  axes = dict(rules(mesh_cfg)).get("batch")
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return math.prod(sizes[a] for a in axes)


def make_mesh(mesh_cfg: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  shape = mesh_shape(mesh_cfg, jax.device_count())
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def rules(mesh_cfg: ml_collections.ConfigDict) -> tuple:
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in mesh_cfg.rules)


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
