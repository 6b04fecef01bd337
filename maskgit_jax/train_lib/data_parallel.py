"""Gradients of a data-parallel CPU step in one all-reduce.

Under `jax.jit` over a mesh that splits the batch, XLA's partitioner
reduces every parameter's gradient over the devices where it is computed,
and its combiner gathers them into one tuple all-reduce. XLA:CPU's
in-process collectives run such a tuple one array at a time, each a
rendezvous of the device threads: 79 of them in every stage-1 step of the
embedded default (its tokenizer's 79 parameter arrays). On the 2-core Xeon
that was 6-7 ms a step of ~52 ms (the all-reduce of 79 arrays of 5,500
floats over 2 CPU devices: 6.2-7.2 ms; of their concatenation: 1.4 ms).

`value_and_grad` computes the same gradient per batch shard under
`shard_map` and averages the shards' gradients in ONE all-reduce of their
concatenation (`ravel_pytree`). It applies where that is measured to help
(`split_axis`): a CPU mesh whose only axis longer than one is `data`. Any
other mesh (FSDP, tensor parallelism, one device, an accelerator, no mesh in
scope) gets plain `jax.value_and_grad`, whose partitioning those need.

The loss must be a mean over equal batch shards of per-example terms (so
that the mean of the shards' losses is the batch's loss), with no
randomness drawn inside it: a shard would draw the whole batch's random
numbers for its own examples. With power-of-two shards the averaging is
exact (scaling by powers of two), so the result equals the plain gradient's
up to the order of float additions inside XLA's reductions.
"""
from typing import Any, Callable, Optional, Tuple

import jax
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec as P
import numpy as np

AXIS = "data"


def split_axis() -> Optional[str]:
  """`"data"` when the mesh in scope (`jax.set_mesh`, as the trainer's
  `sharding.mesh_context` sets) is a CPU mesh of several devices along
  `data` alone; otherwise None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or jax.default_backend() != "cpu":
    return None
  sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
  if AXIS not in sizes or sizes[AXIS] < 2:
    return None
  if any(size != 1 for name, size in sizes.items() if name != AXIS):
    return None
  return AXIS


def value_and_grad(fn: Callable[..., Tuple[jax.Array, Any]], params: Any,
                   *batch: jax.Array, additive: bool = True
                   ) -> Tuple[Tuple[jax.Array, Any], Any]:
  """`jax.value_and_grad(fn, has_aux=True)(params, *batch)`, on a
  data-parallel CPU mesh computed per shard with one all-reduce.

  Args:
    fn: `(params, *batch) -> (loss, aux)`; the loss a float32 scalar, the
      mean over the batch's examples (see the module docstring). `aux`
      leaves are float scalars that are means over the examples (averaged
      over the shards) or arrays `[batch, ...]` (put back together).
    params: the differentiated tree, replicated.
    *batch: arrays `[batch, ...]`, split over the shards.
    additive: False for a loss that is not a mean of per-example terms (a
      batch-level entropy): always the plain gradient.

  Returns:
    `((loss, aux), grads)`, as `jax.value_and_grad` returns them.
  """
  axis = split_axis() if additive else None
  if axis is None:
    return jax.value_and_grad(fn, has_aux=True)(params, *batch)
  _, aux_shape = jax.eval_shape(fn, params, *batch)
  for leaf in jax.tree.leaves(aux_shape):
    if leaf.ndim == 0 and not np.issubdtype(leaf.dtype, np.floating):
      raise TypeError(f"data_parallel.value_and_grad: an aux scalar of "
                      f"dtype {leaf.dtype} cannot be averaged over shards.")
  aux_specs = jax.tree.map(lambda l: P() if l.ndim == 0 else P(axis),
                           aux_shape)

  def shard(params, *shard_batch):
    (loss, aux), grads = jax.value_and_grad(fn, has_aux=True)(
        params, *shard_batch)
    flat, unravel = ravel_pytree(grads)
    grads = unravel(jax.lax.pmean(flat, axis))
    aux = jax.tree.map(
        lambda a: jax.lax.pmean(a, axis) if a.ndim == 0 else a, aux)
    return (jax.lax.pmean(loss, axis), aux), grads

  # check_vma=False: the gradient of the replicated parameters is each
  # shard's own, averaged explicitly above (with the varying-axis checks on,
  # differentiation would insert a per-array reduction of its own).
  return jax.shard_map(
      shard, in_specs=(P(),) + (P(axis),) * len(batch),
      out_specs=((P(), aux_specs), P()), axis_names={axis},
      check_vma=False)(params, *batch)
