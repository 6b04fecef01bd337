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
