"""Muon whose Newton-Schulz iterations are split between data-parallel devices.

optax's `contrib.muon` orthogonalises every weight matrix's momentum on
every device that holds the matrix: on a data-parallel CPU mesh, whose
devices hold every parameter, each device repeats all of it (the embedded
default's tokenizer: 29 small matrices, ~380 MFLOP a step on each of the two
cores). Here the same optimizer orthogonalises
each matrix on one device only, the matrices dealt out by cost, those of
one shape on one device stacked into one batched product, and the results
gathered in one all-gather of their concatenation: the embedded default's
stage-1 step 0.91x as long (`benchmarks/muon_split.py`).

The update is optax's: `scale_by_muon` with no Newton-Schulz steps keeps
the momentum (Nesterov, bias-corrected), the Frobenius normalisation and
the optimizer state's layout (a run recorded with optax's `muon` resumes);
`orthogonalize` then runs the same quintic iterations on the normalised
matrix (`NS_COEFFS`, `NS_STEPS`, oriented with its shorter side first) and
scales it to an Adam update's RMS. Split or not, the values equal optax's to
float32 rounding (tested). The split applies where `data_parallel` splits
gradients (a CPU mesh along `data` alone); elsewhere each device
orthogonalises what it holds, as optax does.
"""
import math
from typing import Any, Callable, List, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import optax

from maskgit_jax.train_lib import data_parallel

DIMS = optax.contrib.MuonDimensionNumbers
# optax's default quintic coefficients and step count (Jordan et al.).
NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def _axes(ndim: int, axis) -> Tuple[int, ...]:
  axis = (axis,) if isinstance(axis, int) else tuple(axis)
  return tuple(a % ndim for a in axis)


class _View:
  """One weight's matrices, `[batch, short, long]` (the shorter side first,
  as the iteration wants), and the way back to the weight's own layout."""

  def __init__(self, shape: Sequence[int], dims: DIMS):
    ndim = len(shape)
    red, out = _axes(ndim, dims.reduction_axis), _axes(ndim, dims.output_axis)
    batch = tuple(a for a in range(ndim) if a not in red + out)
    self.perm = batch + red + out
    self.permuted = tuple(shape[a] for a in self.perm)
    self.fan_in = math.prod(shape[a] for a in red)
    self.fan_out = math.prod(shape[a] for a in out)
    self.batch = math.prod(shape[a] for a in batch)
    self.flip = self.fan_in > self.fan_out

  def to_matrices(self, x: jax.Array) -> jax.Array:
    x = x.transpose(self.perm).reshape(self.batch, self.fan_in, self.fan_out)
    return x.transpose(0, 2, 1) if self.flip else x

  def from_matrices(self, x: jax.Array) -> jax.Array:
    if self.flip:
      x = x.transpose(0, 2, 1)
    inverse = sorted(range(len(self.perm)), key=lambda i: self.perm[i])
    return x.reshape(self.permuted).transpose(inverse)


def newton_schulz(x: jax.Array) -> jax.Array:
  """`NS_STEPS` quintic iterations on Frobenius-normalised matrices
  `[k, short, long]`: their singular values pushed towards 1 (into about
  [0.7, 1.2]), the singular vectors kept."""
  a, b, c = NS_COEFFS
  for _ in range(NS_STEPS):
    gram = jnp.einsum("kij,klj->kil", x, x)
    poly = b * gram + c * jnp.einsum("kij,kjl->kil", gram, gram)
    x = a * x + jnp.einsum("kij,kjl->kil", poly, x)
  return x


def _stacked(mats: List[jax.Array]) -> List[jax.Array]:
  """Newton-Schulz on `mats`, those of one shape in one batched product."""
  out = [None] * len(mats)
  by_shape = {}
  for i, m in enumerate(mats):
    by_shape.setdefault(m.shape[1:], []).append(i)
  for idx in by_shape.values():
    done = newton_schulz(jnp.concatenate([mats[i] for i in idx]))
    start = 0
    for i in idx:
      out[i] = done[start:start + mats[i].shape[0]]
      start += mats[i].shape[0]
  return out


def _deal(costs: Sequence[int], n: int) -> List[List[int]]:
  """Indices dealt to `n` devices, largest cost first to the least loaded."""
  loads, hands = [0] * n, [[] for _ in range(n)]
  for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
    d = loads.index(min(loads))
    hands[d].append(i)
    loads[d] += costs[i]
  return hands


def _split(mats: List[jax.Array], axis: str, n: int) -> List[jax.Array]:
  """Newton-Schulz on `mats` (replicated), each on one of the `n` devices
  along `axis` (`lax.switch` on the device's index), gathered back."""
  # A matrix [short, long]'s iterations cost ~ short^2 * long.
  hands = _deal([m.size * m.shape[1] for m in mats], n)
  width = max(sum(mats[i].size for i in hand) for hand in hands)

  def branch(hand):
    def compute(*ms):
      done = _stacked([ms[i] for i in hand])
      flat = jnp.concatenate([d.reshape(-1) for d in done] +
                             [jnp.zeros((0,), jnp.float32)])
      return jnp.pad(flat, (0, width - flat.shape[0]))
    return compute

  def per_device(*ms):
    mine = jax.lax.switch(jax.lax.axis_index(axis),
                          [branch(h) for h in hands], *ms)
    return jax.lax.all_gather(mine, axis)

  gathered = jax.shard_map(
      per_device, in_specs=(P(),) * len(mats), out_specs=P(),
      axis_names={axis}, check_vma=False)(*mats)
  out = [None] * len(mats)
  for d, hand in enumerate(hands):
    start = 0
    for i in hand:
      out[i] = gathered[d, start:start + mats[i].size].reshape(mats[i].shape)
      start += mats[i].size
  return out


def orthogonalize(dims_fn: Callable[[Any], Any], consistent_rms: float
                  ) -> optax.GradientTransformation:
  """Stateless: Newton-Schulz on each normalised matrix of the updates
  (`dims_fn(updates)`: `DIMS` per weight matrix), then the update scaled by
  `consistent_rms * sqrt(max(fan_in, fan_out))` (Liu et al. 2025)."""
  def update_fn(updates, state, params=None):
    del params
    leaves, treedef = jax.tree.flatten(updates)
    dims = jax.tree.leaves(dims_fn(updates),
                           is_leaf=lambda x: isinstance(x, DIMS))
    if len(dims) != len(leaves):
      raise ValueError(f"muon: {len(leaves)} matrices but {len(dims)} "
                       "dimension numbers")
    views = [_View(x.shape, d) for x, d in zip(leaves, dims)]
    mats = [v.to_matrices(x.astype(jnp.float32))
            for v, x in zip(views, leaves)]
    axis = data_parallel.split_axis()
    n = jax.sharding.get_abstract_mesh().shape[axis] if axis else 1
    if n > 1 and len(mats) > 1:
      done = _split(mats, axis, n)
    else:
      done = [newton_schulz(m) for m in mats]
    out = [(v.from_matrices(d) * (consistent_rms *
                                  math.sqrt(max(v.fan_in, v.fan_out))))
           .astype(x.dtype) for v, d, x in zip(views, done, leaves)]
    return jax.tree.unflatten(treedef, out), state
  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def muon(learning_rate, *, dims_fn: Callable[[Any], Any], weight_decay: float,
         eps: float, adam_b1: float, adam_b2: float, consistent_rms: float,
         beta: float = 0.95) -> optax.GradientTransformation:
  """optax's `contrib.muon` (Nesterov, `consistent_rms`, `dims_fn` choosing
  the weight matrices; Nesterov AdamW without weight decay on the rest) with
  the Newton-Schulz iterations of `orthogonalize`. Its state has optax's
  layout."""
  def labels(params):
    return jax.tree.map(
        lambda d, p: jax.tree.map(lambda _: "adam" if d is None else "muon",
                                  p),
        dims_fn(params), params,
        is_leaf=lambda x: x is None or isinstance(x, DIMS))

  return optax.partition(
      transforms={
          "muon": optax.chain(
              optax.contrib.scale_by_muon(
                  ns_steps=0, beta=beta, eps=eps, nesterov=True,
                  weight_dimension_numbers=dims_fn),
              orthogonalize(dims_fn, consistent_rms),
              optax.add_decayed_weights(weight_decay),
              optax.scale_by_learning_rate(learning_rate)),
          "adam": optax.adamw(learning_rate, b1=adam_b1, b2=adam_b2, eps=eps,
                              weight_decay=0.0, nesterov=True)},
      param_labels=labels)
