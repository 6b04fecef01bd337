"""Per-process numpy batches -> global `jax.Array`s sharded over the data axes.

  mesh = jax.make_mesh((8,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharding = make_data_sharding(mesh)            # NamedSharding(P('data'))
  batch = to_global_array(next(iterator), sharding)

Every process passes its own batch (leading dimension b = global batch /
process count); the result has the global leading dimension and is split
over the devices of the mesh's data axes.
"""
from typing import Any

import jax
import numpy as np


def make_data_sharding(mesh: jax.sharding.Mesh,
                       data_axes: str | tuple[str, ...] = ('data',),
                       ) -> jax.sharding.NamedSharding:
  """The sharding of a batch: dimension 0 over `data_axes`, rest replicated."""
  if isinstance(data_axes, str):
    data_axes = (data_axes,)
  missing = [a for a in data_axes if a not in mesh.axis_names]
  if missing:
    raise ValueError(f'Data axes {missing} are not axes of the mesh '
                     f'{mesh.axis_names}.')
  return jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(tuple(data_axes)))


def _batch_axes(sharding: jax.sharding.NamedSharding) -> Any:
  spec = sharding.spec
  return spec[0] if len(spec) else None


def _axis_size(mesh: jax.sharding.Mesh, axes: Any) -> int:
  if axes is None:
    return 1
  if isinstance(axes, str):
    axes = (axes,)
  return int(np.prod([mesh.shape[a] for a in axes]))


def to_global_array(batch: Any, sharding: jax.sharding.NamedSharding) -> Any:
  """Makes global arrays of a per-process batch (any pytree of arrays).

  Args:
    batch: this process's batch, e.g. {'image': [b, H, W, C], 'label': [b],
      'mask': [b]}; every leaf has the same leading dimension b.
    sharding: a NamedSharding whose first PartitionSpec entry names the data
      axes the batch dimension is split over (e.g. `make_data_sharding`).
      Only that entry is used; the other dimensions are replicated, so one
      sharding serves leaves of any rank.

  Returns:
    The same pytree of `jax.Array`s with leading dimension b * process_count.

  Raises:
    ValueError: leaves with different leading dimensions, or a global batch
      that the data axes do not divide.
  """
  if not isinstance(sharding, jax.sharding.NamedSharding):
    raise ValueError(f'Expected a jax.sharding.NamedSharding, got {sharding}.')
  leaves = jax.tree.leaves(batch)
  sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f'Batch leaves need one common leading dimension, got '
                     f'{jax.tree.map(np.shape, batch)}.')
  axes = _batch_axes(sharding)
  global_size = sizes.pop() * jax.process_count()
  shards = _axis_size(sharding.mesh, axes)
  if global_size % shards:
    raise ValueError(
        f'The global batch size {global_size} is not divisible by the '
        f'{shards} devices of the data axes {axes!r}.')

  def put(x):
    x = np.asarray(x)
    spec = jax.sharding.PartitionSpec(axes, *([None] * (x.ndim - 1)))
    leaf_sharding = jax.sharding.NamedSharding(sharding.mesh, spec)
    return jax.make_array_from_process_local_data(leaf_sharding, x)

  return jax.tree.map(put, batch)
