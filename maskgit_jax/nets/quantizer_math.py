"""The vector quantizer's distance and entropy terms, and its rotation-trick
gradient.

They live with the networks (not in `libml.losses`, which re-exports them)
so that `nets` imports nothing above it.
"""

import jax
import jax.numpy as jnp


def squared_euclidean_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pairwise squared L2 distances `|a_i|^2 - 2 a_i.b_j + |b_j|^2`.

  Args:
    a: `[n, d]` points.
    b: `[m, d]` points.

  Returns:
    `[n, m]` distances. The product runs at full float32 precision so that the
    nearest code does not depend on the accelerator's default matmul precision.
  """
  a2 = jnp.sum(a**2, axis=1, keepdims=True)
  b2 = jnp.sum(b**2, axis=1)[None, :]
  ab = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return a2 - 2 * ab + b2


ENTROPY_LOSS_TYPES = ("softmax", "argmax")


def entropy_loss(affinity: jax.Array, loss_type: str = "softmax",
                 temperature: float = 1.0) -> jax.Array:
  """Per-sample entropy minus entropy of the batch-average code distribution.

  Minimising it makes each feature commit to one code while the batch uses
  many codes (the release's entropy loss).

  Args:
    affinity: `[..., K]` code affinities (e.g. negative distances).
    loss_type: "softmax" or "argmax" (straight-through one-hot targets).
    temperature: the affinities are divided by it.

  Returns:
    A scalar.
  """
  flat = affinity.reshape(-1, affinity.shape[-1]) / temperature
  probs = jax.nn.softmax(flat, axis=-1)
  log_probs = jax.nn.log_softmax(flat + 1e-5, axis=-1)
  if loss_type == "softmax":
    target = probs
  elif loss_type == "argmax":
    onehot = jax.nn.one_hot(jnp.argmax(flat, axis=-1), flat.shape[-1],
                            dtype=flat.dtype)
    target = probs - jax.lax.stop_gradient(probs - onehot)
  else:
    raise ValueError(
        f"Unknown entropy loss type {loss_type!r}; expected 'softmax' or 'argmax'.")
  avg_probs = jnp.mean(target, axis=0)
  avg_entropy = -jnp.sum(avg_probs * jnp.log(avg_probs + 1e-5))
  sample_entropy = -jnp.mean(jnp.sum(target * log_probs, axis=-1))
  return sample_entropy - avg_entropy


QUANTIZER_GRADIENTS = ("straight_through", "rotation")


def rotation_trick(z: jax.Array, q: jax.Array, eps: float = 1e-6) -> jax.Array:
  """`q` in value, with the gradient of `z` rotated (Fifty et al. 2025).

  `[..., d]` features `z` and their codes `q` -> `[..., d]`: `s R z` where
  `R = I - 2 r r^T + 2 q^ z^T` (`z^`, `q^` the unit vectors, `r` the unit
  bisector of `z^` and `q^`) takes `z^` to `q^`, and `s = |q| / |z|`; `R`
  and `s` are constants for the gradient, so `dL/dz = s R^T dL/dq`.
  """
  z_sg = jax.lax.stop_gradient(z)
  q = jax.lax.stop_gradient(q)
  z_norm = jnp.linalg.norm(z_sg, axis=-1, keepdims=True)
  q_norm = jnp.linalg.norm(q, axis=-1, keepdims=True)
  z_hat = z_sg / jnp.maximum(z_norm, eps)
  q_hat = q / jnp.maximum(q_norm, eps)
  r = z_hat + q_hat
  r = r / jnp.maximum(jnp.linalg.norm(r, axis=-1, keepdims=True), eps)
  dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)  # noqa: E731
  rotated = z - 2 * r * dot(r, z) + 2 * q_hat * dot(z_hat, z)
  return rotated * (q_norm / jnp.maximum(z_norm, eps))
