"""Noisy tokens for the decoder: each code id swapped, with a probability,
for one of its nearest codes.

Stage 1's decoder-only phase (`tokenizer_training.decoder_token_noise`,
`tokenizer_task`) decodes such ids with the loss still against the image, so
that the decoder learns to draw a plausible image from the near misses of
stage 2's samples (the latent perturbation of Qiu et al., "Robust Latent
Matters", arXiv 2503.08354).
"""

from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections

from maskgit_jax.common import checks
from maskgit_jax.nets import layers
from maskgit_jax.nets import quantizer_math

# Nearest codes a noisy token may become (decoder_token_noise_neighbours=None).
DEFAULT_NOISE_NEIGHBOURS = 8


def settings(c: ml_collections.ConfigDict,
             codebook_size: Optional[int] = None):
  """`(probability, neighbours)` of the decoder phase's token noise (a
  probability of 0: off), or a one-line ValueError naming the key."""
  p = c.get("decoder_token_noise")
  p = 0.0 if p is None else p
  if not checks.is_number(p, 0, 1):
    checks.refuse("tokenizer_training.decoder_token_noise", p,
                  "a probability in [0, 1] (None or 0: off)")
  k = c.get("decoder_token_noise_neighbours")
  k = DEFAULT_NOISE_NEIGHBOURS if k is None else k
  top = f"codebook_size - 1 = {codebook_size - 1}" if codebook_size else (
      "codebook_size - 1")
  if not checks.is_int(k, 1) or (codebook_size and p and k >= codebook_size):
    checks.refuse("tokenizer_training.decoder_token_noise_neighbours", k,
                  f"an int in [1, {top}]")
  return float(p), k


def perturb_tokens(codebook: jax.Array, ids: jax.Array, rng: jax.Array,
                   probability: float, neighbours: int,
                   l2_normalized: bool) -> jax.Array:
  """Code ids `[...]`, each replaced with `probability` by one of its
  `neighbours` nearest other codes of `codebook` `[K, d]` (drawn uniformly;
  nearest in the space the quantizer matches in: cosine if `l2_normalized`).
  """
  codes = codebook.astype(jnp.float32)
  if l2_normalized:
    codes = layers.l2_normalize(codes)
  distance = quantizer_math.squared_euclidean_distance(codes, codes)
  distance += jnp.where(jnp.eye(codes.shape[0], dtype=bool), jnp.inf, 0.)
  _, nearest = jax.lax.top_k(-distance, neighbours)  # [K, neighbours]
  pick_rng, which_rng = jax.random.split(rng)
  noisy = jax.random.bernoulli(pick_rng, probability, ids.shape)
  which = jax.random.randint(which_rng, ids.shape, 0, neighbours)
  return jnp.where(noisy, nearest[ids, which], ids)
