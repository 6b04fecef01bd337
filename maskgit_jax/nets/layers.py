"""Small shared layers: activations, resampling, l2 normalisation, remat."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_ACTIVATIONS = {"swish": nn.swish, "relu": nn.relu, "gelu": nn.gelu}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Returns the activation function called `name` (swish, relu, gelu)."""
  try:
    return _ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"Unknown activation {name!r}; expected one of "
                     f"{sorted(_ACTIVATIONS)}.") from None


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, 'SAME' padding, padding cells excluded.

  This is TensorFlow's average pooling (the release's `dsample`): at an odd
  border the mean is over the cells that exist. `[b, h, w, c]` ->
  `[b, ceil(h/2), ceil(w/2), c]`.
  """
  window, strides = (1, 2, 2, 1), (1, 2, 2, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "SAME")
  _, h, w, _ = x.shape
  if h % 2 == 0 and w % 2 == 0:
    return total / 4.0
  # Cells per window at an odd border (computed on the host: a constant).
  ones = np.ones((h + h % 2, w + w % 2), np.float32)
  ones[h:, :] = 0
  ones[:, w:] = 0
  count = ones.reshape(ones.shape[0] // 2, 2, ones.shape[1] // 2, 2).sum((1, 3))
  return total / jnp.asarray(count, x.dtype)[None, :, :, None]


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling. `[b, h, w, c]` -> `[b, h*f, w*f, c]`."""
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h * factor, w * factor, c), method="nearest")


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """Scales `x` to unit L2 norm along `axis`."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps)


REMAT_POLICIES = ("none", "minimal", "full")


def check_remat_policy(policy: str, key: str = "remat policy") -> None:
  """Raises a one-line ValueError naming `key` unless `policy` is one of
  REMAT_POLICIES."""
  if policy not in REMAT_POLICIES:
    raise ValueError(f"{key}={policy!r} is not one of {list(REMAT_POLICIES)}.")


def remat(module_class, policy: str, static_argnums=(), prevent_cse=True):
  """`module_class`, rematerialised in the backward pass by `policy`.

  - "none": unchanged (every activation autodiff needs is kept);
  - "minimal": keeps the outputs of matmuls without batch dimensions (the
    dense projections) and recomputes the rest (attention, norms,
    activations) from them;
  - "full": keeps only the block's inputs and recomputes the whole block.

  Variables, their names and the function are those of `module_class`; give
  each instance an explicit `name` (flax would otherwise prefix
  "Checkpoint"). `static_argnums` counts `self` as 0, as `nn.remat` does;
  `prevent_cse=False` inside `nn.scan`, which needs no CSE barrier.
  """
  check_remat_policy(policy)
  if policy == "none":
    return module_class
  saveable = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable
              if policy == "minimal" else None)
  return nn.remat(module_class, policy=saveable, static_argnums=static_argnums,
                  prevent_cse=prevent_cse)
