"""Losses shared by the tokenizer and the transformer."""

import functools

import jax
import jax.numpy as jnp

# The quantizer's terms, defined with the networks (nets imports nothing
# above it); the tokenizer's loss uses them from here too.
from maskgit_jax.nets.quantizer_math import entropy_loss  # noqa: F401
from maskgit_jax.nets.quantizer_math import squared_euclidean_distance  # noqa: F401

GAN_LOSSES = ("non-saturating", "hinge")
RECONSTRUCTION_LOSSES = ("l2", "l1")


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array,
                           weights: jax.Array,
                           label_smoothing: float = 0.0) -> jax.Array:
  """Weighted mean cross-entropy with label smoothing (the release's form).

  Targets are `one_hot * (1 - s) + s / num_classes`.

  Args:
    logits: `[b, l, c]`; labels: int `[b, l]`; weights: `[b, l]`.

  Returns:
    The mean over examples of the weighted mean over positions.
  """
  loss = _token_cross_entropy(logits.astype(jnp.float32), labels,
                              float(label_smoothing))
  per_example = jnp.sum(loss * weights, -1) / jnp.maximum(
      jnp.sum(weights, -1), 1e-8)
  return jnp.mean(per_example)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _token_cross_entropy(logits, labels, smoothing):
  """`[b, l, c]` float32 logits, `[b, l]` labels -> `[b, l]` losses
  `-sum(targets * log_softmax(logits))`, written as `logsumexp - (1 - s) *
  logit[label] - s * mean(logits)` (the targets sum to one). Its gradient,
  `(softmax - targets) * g`, is one elementwise pass over the logits,
  where XLA's own differentiation of `log_softmax` made several."""
  return _token_cross_entropy_fwd(logits, labels, smoothing)[0]


def _token_cross_entropy_fwd(logits, labels, smoothing):
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, labels[..., None], -1)[..., 0]
  loss = lse - (1.0 - smoothing) * picked
  if smoothing:
    loss = loss - smoothing * jnp.mean(logits, -1)
  return loss, (logits, labels, lse)


def _token_cross_entropy_bwd(smoothing, residuals, g):
  logits, labels, lse = residuals
  num_classes = logits.shape[-1]
  targets = (jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
             == labels[..., None]).astype(logits.dtype)
  targets = targets * (1.0 - smoothing) + smoothing / num_classes
  return (jnp.exp(logits - lse[..., None]) - targets) * g[..., None], None


_token_cross_entropy.defvjp(_token_cross_entropy_fwd, _token_cross_entropy_bwd)


def _sigmoid_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Stable `max(x, 0) - x z + log(1 + exp(-|x|))`."""
  return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(
      jnp.exp(-jnp.abs(logits)))


def discriminator_loss(real_logit: jax.Array, fake_logit: jax.Array,
                       loss_type: str = "non-saturating") -> jax.Array:
  """Hinge or non-saturating (logistic) discriminator loss."""
  if loss_type == "hinge":
    return jnp.mean(jax.nn.relu(1. - real_logit) + jax.nn.relu(1. + fake_logit))
  if loss_type == "non-saturating":
    return jnp.mean(_sigmoid_cross_entropy(real_logit, jnp.ones_like(real_logit))
                    + _sigmoid_cross_entropy(fake_logit,
                                             jnp.zeros_like(fake_logit)))
  raise ValueError(f"Unknown GAN loss {loss_type!r}; expected 'hinge' or "
                   "'non-saturating'.")


def generator_loss(fake_logit: jax.Array,
                   loss_type: str = "non-saturating") -> jax.Array:
  """Hinge (`-mean(D(G))`) or non-saturating generator loss."""
  if loss_type == "hinge":
    return -jnp.mean(fake_logit)
  if loss_type == "non-saturating":
    return jnp.mean(_sigmoid_cross_entropy(fake_logit,
                                           jnp.ones_like(fake_logit)))
  raise ValueError(f"Unknown GAN loss {loss_type!r}; expected 'hinge' or "
                   "'non-saturating'.")


def r1_penalty(d_fn, images: jax.Array) -> jax.Array:
  """Mean over examples of `|d sum(D(x)) / dx|^2` at real images."""
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(images)
  return jnp.mean(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), -1))


def lecam_regularizer(real_logit, fake_logit, real_ema, fake_ema):
  """LeCAM (Tseng et al. 2021): `|relu(D(x) - ema_fake)|^2 + |relu(ema_real - D(G))|^2`."""
  return (jnp.mean(jnp.square(jax.nn.relu(real_logit - fake_ema))) +
          jnp.mean(jnp.square(jax.nn.relu(real_ema - fake_logit))))


def reconstruction_loss(x: jax.Array, y: jax.Array, kind: str = "l2"):
  """Mean L1 or L2 pixel loss."""
  diff = jnp.asarray(x - y, jnp.float32)
  if kind == "l2":
    return jnp.mean(jnp.square(diff))
  if kind == "l1":
    return jnp.mean(jnp.abs(diff))
  raise ValueError(f"Unknown reconstruction loss {kind!r}; expected l1 or l2.")
