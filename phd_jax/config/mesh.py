"""The device mesh a config asks for: its axis sizes and the logical axis rules.

Pure config arithmetic (no devices are touched), so validation can check a batch against the
mesh before anything is built; phd_jax/model/sharding.py builds the mesh itself.
"""
from __future__ import annotations

import math

import ml_collections

MESH_AXES = ("data", "fsdp", "tensor")


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


def rules(mesh_cfg: ml_collections.ConfigDict) -> tuple:
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in mesh_cfg.rules)


def batch_shards(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> int:
  """Into how many pieces the rules cut the batch (the product of its mesh axes)."""
  sizes = dict(zip(MESH_AXES, mesh_shape(mesh_cfg, num_devices)))
  axes = dict(rules(mesh_cfg)).get("batch")
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return math.prod(sizes[a] for a in axes)
