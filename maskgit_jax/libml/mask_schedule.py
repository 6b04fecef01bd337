"""Mask schedules: the fraction of tokens still masked as a function of progress.

`schedule(ratio, total_unknown, method)` maps a progress ratio in [0, 1) (the
uniformly sampled training ratio, or `t / T` at inference) to a mask ratio in
(0, 1]. Numerically identical to the released MaskGIT, including the clip to
[1e-6, 1]; unlike the release, an unknown method raises a `ValueError`.
"""

import math

import jax
import jax.numpy as jnp

METHODS = ("uniform", "cosine", "powX", "log", "exp")


def _pow_exponent(method: str) -> float:
  try:
    return float(method[len("pow"):])
  except ValueError:
    raise ValueError(
        f"Unknown mask schedule {method!r}: 'pow' must be followed by a number,"
        " e.g. 'pow2' or 'pow2.5'.") from None


def validate(method: str) -> None:
  """Raises ValueError if `method` names no schedule."""
  if not isinstance(method, str):
    raise ValueError(f"Mask schedule must be a string, got {method!r}.")
  if method.startswith("pow"):
    _pow_exponent(method)
  elif method not in ("uniform", "cosine", "log", "exp"):
    raise ValueError(f"Unknown mask schedule {method!r}; expected one of "
                     f"{', '.join(METHODS)} (e.g. 'pow2.5').")


def schedule(ratio, total_unknown, method: str = "cosine"):
  """Returns the mask ratio for a progress ratio.

  Args:
    ratio: float or array in [0, 1): progress (training: uniform sample;
      inference: step / num_iter).
    total_unknown: number of tokens that can be masked (e.g. 256 for a 16x16
      grid); scalar or array broadcastable with `ratio`. Only `log` and `exp`
      use it.
    method: "uniform", "cosine", "powX" (x**X, e.g. "pow2.5"), "log" or "exp".

  Returns:
    The mask ratio, clipped to [1e-6, 1], same shape as the broadcast inputs.
  """
  validate(method)
  if method == "uniform":
    mask_ratio = 1. - ratio
  elif method.startswith("pow"):
    mask_ratio = 1. - ratio**_pow_exponent(method)
  elif method == "cosine":
    mask_ratio = jax.lax.cos(math.pi / 2. * ratio)
  elif method == "log":
    mask_ratio = -jnp.log2(ratio) / jnp.log2(total_unknown)
  else:  # exp
    mask_ratio = 1 - jnp.exp2(-jnp.log2(total_unknown) * (1 - ratio))
  return jnp.clip(mask_ratio, 1e-6, 1.)


def random_training_mask(rng: jax.Array, batch: int, seq_len: int,
                         method: str = "cosine", min_ratio: float = 0.0):
  """Training masks with an exact number of masked tokens per example.

  For each example a progress ratio r ~ U[0, 1) gives the masked fraction
  `m = max(min_ratio, schedule(r))` and `n = ceil(seq_len * m)` masked tokens
  (the paper's ceiling: a fully masked grid, where every sample starts, is
  drawn with probability P(schedule(r) > (seq_len - 1) / seq_len), ~11% for
  the cosine schedule at seq_len 64), placed uniformly at random (ranks of
  uniform noise below n).

  Args:
    rng: a PRNG key.
    batch: examples.
    seq_len: maskable tokens per example.
    method: the mask schedule (see `schedule`).
    min_ratio: the minimum masked fraction in [0, 1) (open-MUSE's and
      MaskBit's `min_masking_rate`; the release's config sets 0.5): the
      masked fraction is clipped from below, so it never falls under it.

  Returns:
    `(mask bool [batch, seq_len], n int32 [batch])`.
  """
  if not 0.0 <= float(min_ratio) < 1.0:
    raise ValueError(f"min_mask_ratio={min_ratio!r} must be in [0, 1).")
  ratio_rng, position_rng = jax.random.split(rng)
  ratio = jax.random.uniform(ratio_rng, (batch,), minval=0., maxval=1.)
  mask_ratio = jnp.maximum(schedule(ratio, seq_len, method), min_ratio)
  # The float product may land a hair above an integer (e.g. 0.5 * 64): round
  # it to 1e-4 of a token before the ceiling so that n is the paper's count.
  scaled = jnp.round(seq_len * mask_ratio * 1e4) / 1e4
  n = jnp.clip(jnp.ceil(scaled), 1, seq_len).astype(jnp.int32)
  noise = jax.random.uniform(position_rng, (batch, seq_len))
  ranks = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)
  # The same n, counted from the mask: a reduction, which XLA computes once;
  # otherwise XLA:CPU fused the schedule's cosine into every `[b, l, vocab]`
  # pass of the loss's gradient that the weights (the mask) feed, once per
  # element (measured: benchmarks/profile_step.py).
  n = jnp.sum(ranks < n[:, None], axis=-1, dtype=jnp.int32)
  return ranks < n[:, None], n
