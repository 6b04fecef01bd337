"""Optimizers and learning-rate schedules from config sections."""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from maskgit_jax.common import checks
from maskgit_jax.train_lib import muon


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


def _boxed(x: Any) -> bool:
  return isinstance(x, nn.meta.AxisMetadata)


def _value(leaf: Any) -> Any:
  return leaf.unbox() if _boxed(leaf) else leaf


def _names(path) -> Tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def decay_mask(params: Any) -> Any:
  """True for weights that get weight decay: kernels only.

  No decay on biases, norm scales/offsets, embeddings (word and position),
  codebooks or any 1-d parameter.
  """
  def keep(path, leaf):
    names = _names(path)
    return jnp.ndim(_value(leaf)) >= 2 and bool(names) and names[-1] == "kernel"
  return jax.tree_util.tree_map_with_path(keep, params, is_leaf=_boxed)


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
  if c.get("name", "adam") not in OPTIMIZERS:
    raise ValueError(f"{where}.name={c.get('name')!r} must be one of "
                     f"{', '.join(OPTIMIZERS)}.")


OPTIMIZERS = ("adam", "adamw", "muon")
# Muon's updates scaled to the RMS of an Adam update (Liu et al. 2025,
# "Muon is scalable for LLM training"), so that a recipe's AdamW learning
# rate and weight decay carry over.
MUON_RMS = 0.2
_ATTENTION_IN = ("query", "key", "value")


def muon_dimensions(params: Any) -> Any:
  """For Muon: which axes of each weight matrix are its input and output.

  Every `kernel` of two or more dimensions is a matrix for Muon (leading
  axes of scanned layers are batch axes): a dense kernel `[..., in, out]`,
  an attention projection `[..., in, heads, head_dim]` (query, key, value)
  or `[..., heads, head_dim, out]` (out), a convolution `[kh, kw, in, out]`.
  Everything else (embeddings, codebooks, biases, norms) is None: Adam.
  """
  dims = muon.DIMS

  def rule(path, leaf):
    names = _names(path)
    ndim = jnp.ndim(_value(leaf))
    if not names or names[-1] != "kernel" or ndim < 2:
      return None
    module = names[-2] if len(names) > 1 else ""
    if module in _ATTENTION_IN and ndim >= 3:
      return dims(reduction_axis=-3, output_axis=(-2, -1))
    if module == "out" and ndim >= 3:
      return dims(reduction_axis=(-3, -2), output_axis=-1)
    if ndim == 4:  # a 2-D convolution's kernel
      return dims(reduction_axis=(0, 1, 2), output_axis=3)
    return dims(reduction_axis=-2, output_axis=-1)
  return jax.tree_util.tree_map_with_path(rule, params, is_leaf=_boxed)


def make_optimizer(c: ml_collections.ConfigDict, num_steps: int):
  """An optax transformation from `c`: adam | adamw | muon, with clipping.

  Keys: `name`, `lr`, `b1`, `b2`, `weight_decay` (adamw and muon; masked by
  `decay_mask`), `grad_clip_norm` (0 = off), `warmup_steps`, `lr_schedule`,
  `lr_end_factor`. Returns `(optimizer, schedule)`.

  "muon": Muon (momentum 0.95, Nesterov, 5 Newton-Schulz steps) on every
  weight matrix (`muon_dimensions`), its update scaled to an Adam update's
  RMS (`MUON_RMS`) so that the AdamW learning rate and weight decay apply;
  Adam with `b1`, `b2`, Nesterov momentum and no weight decay on the other
  parameters: optax's `contrib.muon`, with the Newton-Schulz iterations
  dealt out to a data-parallel mesh's devices (`train_lib/muon.py`).
  """
  schedule = learning_rate_schedule(c, num_steps)
  name = c.get("name", "adam")
  if name == "adam":
    tx = optax.adam(schedule, b1=c.b1, b2=c.b2, eps=c.get("eps", 1e-8))
  elif name == "adamw":
    tx = optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.get("eps", 1e-8),
                     weight_decay=c.weight_decay, mask=decay_mask)
  elif name == "muon":
    tx = muon.muon(schedule, dims_fn=muon_dimensions,
                   weight_decay=float(c.get("weight_decay", 0.0)),
                   eps=c.get("eps", 1e-8), adam_b1=c.b1, adam_b2=c.b2,
                   consistent_rms=MUON_RMS)
  else:
    raise ValueError(f"Unknown optimizer {name!r}; expected one of "
                     f"{OPTIMIZERS}.")
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
