"""Optimizers and learning-rate schedules from config sections."""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from maskgit_jax.common import checks


def learning_rate_schedule(c: ml_collections.ConfigDict, num_steps: int):
  """Linear warm-up to `c.lr`, then `c.lr_schedule`: constant | cosine | linear.

  Cosine and linear decay from the end of warm-up to `c.lr * c.lr_end_factor`
  at `num_steps`.
  """
  warmup = int(c.get("warmup_steps", 0))
  peak = float(c.lr)
  kind = c.get("lr_schedule", "constant")
  end = peak * float(c.get("lr_end_factor", 0.0))
  decay_steps = max(1, num_steps - warmup)
  if kind == "constant":
    after = optax.constant_schedule(peak)
  elif kind == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps,
                                        alpha=end / peak if peak else 0.0)
  elif kind == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
  else:
    raise ValueError(f"Unknown lr_schedule {kind!r}; expected constant, "
                     "cosine or linear.")
  if warmup <= 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params: Any) -> Any:
  """True for weights that get weight decay: kernels only.

  No decay on biases, norm scales/offsets, embeddings (word and position),
  codebooks or any 1-d parameter.
  """
  boxed = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731

  def keep(path, leaf):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    value = leaf.unbox() if boxed(leaf) else leaf
    return jnp.ndim(value) >= 2 and bool(names) and names[-1] == "kernel"
  return jax.tree_util.tree_map_with_path(keep, params, is_leaf=boxed)


def check_optimizer_config(c: ml_collections.ConfigDict,
                           where: str = "optimizer") -> None:
  """Raises a one-line ValueError naming `where.key` and the bad value."""
  def number(key, default, *bounds, **kwargs):
    checks.check_number(f"{where}.{key}", c.get(key, default), *bounds,
                        **kwargs)
  number("lr", 1e-4, 0, open_low=True)
  number("b1", 0.9, 0, 1, open_high=True)
  number("b2", 0.999, 0, 1, open_high=True)
  number("weight_decay", 0.0, 0)
  number("lr_end_factor", 0.0, 0, 1)
  number("grad_clip_norm", 0.0, 0, note="0 = off")
  warmup = c.get("warmup_steps", 0)
  if not (checks.is_number(warmup, 0) and warmup == int(warmup)):
    checks.refuse(f"{where}.warmup_steps", warmup, "a whole number >= 0")
  if c.get("lr_schedule", "constant") not in ("constant", "cosine", "linear"):
    raise ValueError(f"{where}.lr_schedule={c.get('lr_schedule')!r} must be "
                     "constant, cosine or linear.")
  if c.get("name", "adam") not in ("adam", "adamw"):
    raise ValueError(f"{where}.name={c.get('name')!r} must be adam or adamw.")


def make_optimizer(c: ml_collections.ConfigDict, num_steps: int):
  """An optax transformation from `c`: adam | adamw, with clipping.

  Keys: `name`, `lr`, `b1`, `b2`, `weight_decay` (adamw; masked by
  `decay_mask`), `grad_clip_norm` (0 = off), `warmup_steps`, `lr_schedule`,
  `lr_end_factor`. Returns `(optimizer, schedule)`.
  """
  schedule = learning_rate_schedule(c, num_steps)
  name = c.get("name", "adam")
  if name == "adam":
    tx = optax.adam(schedule, b1=c.b1, b2=c.b2, eps=c.get("eps", 1e-8))
  elif name == "adamw":
    tx = optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.get("eps", 1e-8),
                     weight_decay=c.weight_decay, mask=decay_mask)
  else:
    raise ValueError(f"Unknown optimizer {name!r}; expected adam or adamw.")
  clip = float(c.get("grad_clip_norm", 0.0))
  if clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx, schedule


def ema_update(ema: Any, params: Any, decay: float) -> Any:
  """`ema * decay + params * (1 - decay)`, leaf by leaf."""
  return jax.tree.map(lambda e, p: e * decay + p * (1 - decay), ema, params)


def reset_rows(tree: Any, path: Tuple[str, ...], rows: jax.Array,
               values: Optional[jax.Array] = None) -> Any:
  """Resets the rows `rows` (bool `[n]`) of every leaf of `tree` found under
  the key path `path` (e.g. `("quantizer", "codebook")`, matched as the last
  keys of the leaf's path, so it finds the parameter inside optimizer states
  too): to `values[rows]` (`[n, d]`) when given, to zeros otherwise.

  Used when codebook entries are restarted: their Adam moments start afresh
  (zeros) and their EMA copy jumps to the new entry."""
  path = tuple(path)

  def reset(key_path, leaf):
    names = tuple(getattr(k, "key", getattr(k, "name", None))
                  for k in key_path)
    if names[-len(path):] != path or getattr(leaf, "ndim", 0) < 1:
      return leaf
    new = jnp.zeros_like(leaf) if values is None else values.astype(leaf.dtype)
    keep = rows.reshape((-1,) + (1,) * (leaf.ndim - 1))
    return jnp.where(keep, new, leaf)

  return jax.tree_util.tree_map_with_path(reset, tree)
