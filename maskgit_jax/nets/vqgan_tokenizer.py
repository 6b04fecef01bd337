"""The MaskGIT tokenizer: a VQGAN without attention (Esser et al. 2021, as released).

Images `[batch, H, W, C]` in [0, 1] are encoded to a grid of discrete codes
`[batch, H/f, W/f]` with `f = 2 ** (len(channel_multipliers) - 1)`, and decoded
back. The variable tree of `VQVAE.from_preset("imagenet")` equals the released
`tokenizer_imagenet{256,512}_checkpoint` (module names are the release's).

Beyond the release, off by default:
- `code_dim`: a factorised low-dimensional code (the encoder output is
  projected to `code_dim` before lookup and back after it);
- `l2_normalized`: cosine lookup, codes and encoder outputs l2-normalised;
- `compute_stats`: codebook usage and perplexity returned with the losses;
- `release_shortcut=False`: the textbook residual shortcut (see `ResBlock`);
- `group_norm="matmul"`: the GroupNorm statistics as matrix-vector products
  (`layers.GroupNorm`: the same variables, faster on XLA:CPU);
- `quantizer_gradient="rotation"`: the rotation trick (Fifty et al. 2025)
  instead of the straight-through estimator (see `VectorQuantizer`);
- `decoder_attention`: self-attention after the decoder's middle blocks.
"""

import dataclasses
import itertools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskgit_jax.nets import quantizer_math as losses
from maskgit_jax.nets import layers

Dtype = Any

# Released ImageNet tokenizer (maskgit/configs/vqgan_config.py); the same
# network serves 256x256 and 512x512 images (16x downsampling).
PRESETS = {
    "imagenet": dict(
        filters=128, channel_multipliers=(1, 1, 2, 2, 4), num_res_blocks=2,
        embedding_dim=256, codebook_size=1024, num_groups=32),
    # A CPU-sized tokenizer for 32x32 images (8x8 tokens).
    "small": dict(
        filters=16, channel_multipliers=(1, 2, 4), num_res_blocks=1,
        embedding_dim=64, codebook_size=512, num_groups=8, code_dim=16,
        l2_normalized=True),
    # For tests: a few thousand parameters.
    "tiny": dict(
        filters=8, channel_multipliers=(1, 2), num_res_blocks=1,
        embedding_dim=8, codebook_size=16, num_groups=4),
}


class ResBlock(nn.Module):
  """Residual block: (GroupNorm, act, 3x3 conv) x 2 plus a shortcut.

  When the channel count changes, the release computes the shortcut with a
  1x1 conv of the *residual branch's output* (not of the block input), so its
  kernel is `[1, 1, filters, filters]` and the block returns
  `h + conv1x1(h)`. `release_shortcut=True` (default) keeps that, which the
  released checkpoints need; False projects the block input instead (kernel
  `[1, 1, in_channels, filters]`).

  `[b, h, w, c_in]` -> `[b, h, w, filters]`.
  """
  filters: int
  num_groups: int = 32
  activation: str = "swish"
  release_shortcut: bool = True
  dtype: Dtype = jnp.float32
  kernel_size: int = 3
  group_norm: str = "reduce"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = layers.get_activation(self.activation)
    shortcut = x
    kernel = (self.kernel_size, self.kernel_size)
    norm = lambda: layers.group_norm(  # noqa: E731
        self.group_norm, self.num_groups, self.dtype)
    h = norm()(x)
    h = nn.Conv(self.filters, kernel, use_bias=False, dtype=self.dtype)(act(h))
    h = norm()(h)
    h = nn.Conv(self.filters, kernel, use_bias=False, dtype=self.dtype)(act(h))
    if x.shape[-1] != self.filters:
      source = h if self.release_shortcut else x
      shortcut = nn.Conv(
          self.filters, (1, 1), use_bias=False, dtype=self.dtype)(source)
    return h + shortcut


def _blocks(parent: nn.Module):
  """`filters -> ResBlock` of `parent`'s settings, rematerialised by
  `parent.remat`, named `ResBlock_<i>` in creation order (flax's own names,
  so the variables are the same whatever the policy)."""
  cls = layers.remat(ResBlock, parent.remat)
  count = itertools.count()
  return lambda filters, kernel_size=3: cls(
      filters, parent.num_groups, parent.activation, parent.release_shortcut,
      parent.dtype, kernel_size, parent.group_norm,
      name=f"ResBlock_{next(count)}")


class Encoder(nn.Module):
  """Images `[b, H, W, C]` -> features `[b, H/f, W/f, embedding_dim]`.

  `spatial_levels` (None: all, the release's) limits the residual blocks'
  3x3 convolutions to the first that many resolution levels; the blocks
  after them (and the middle blocks) use 1x1 kernels, so that each token
  sees its own patch and a small margin instead of most of the image (with
  1 and two 2x downsamplings: a 10x10-pixel window around its 4x4 patch).
  """
  filters: int
  channel_multipliers: Sequence[int]
  num_res_blocks: int
  embedding_dim: int
  num_groups: int = 32
  activation: str = "swish"
  conv_downsample: bool = False
  release_shortcut: bool = True
  dtype: Dtype = jnp.float32
  remat: str = "none"
  spatial_levels: Optional[int] = None
  group_norm: str = "reduce"

  def _kernel(self, level: int) -> int:
    local = self.spatial_levels is not None and level >= self.spatial_levels
    return 1 if local else 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    block = _blocks(self)
    x = nn.Conv(self.filters, (3, 3), use_bias=False, dtype=self.dtype)(x)
    num_levels = len(self.channel_multipliers)
    filters = self.filters
    for level, multiplier in enumerate(self.channel_multipliers):
      filters = self.filters * multiplier
      for _ in range(self.num_res_blocks):
        x = block(filters, self._kernel(level))(x)
      if level < num_levels - 1:
        if self.conv_downsample:
          x = nn.Conv(filters, (4, 4), strides=(2, 2), dtype=self.dtype)(x)
        else:
          x = layers.avg_pool_2x2(x)
    for _ in range(self.num_res_blocks):
      x = block(filters, self._kernel(num_levels))(x)
    x = layers.group_norm(self.group_norm, self.num_groups, self.dtype)(x)
    x = layers.get_activation(self.activation)(x)
    return nn.Conv(self.embedding_dim, (1, 1), dtype=self.dtype)(x)


class Decoder(nn.Module):
  """Features `[b, h, w, embedding_dim]` -> images `[b, h*f, w*f, output_dim]`."""
  filters: int
  channel_multipliers: Sequence[int]
  num_res_blocks: int
  output_dim: int = 3
  num_groups: int = 32
  activation: str = "swish"
  release_shortcut: bool = True
  dtype: Dtype = jnp.float32
  remat: str = "none"
  group_norm: str = "reduce"
  attention: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    block = _blocks(self)
    filters = self.filters * self.channel_multipliers[-1]
    x = nn.Conv(filters, (3, 3), dtype=self.dtype)(x)
    for _ in range(self.num_res_blocks):
      x = block(filters)(x)
    if self.attention:
      x = layers.SpatialSelfAttention(self.num_groups, self.dtype,
                                      self.group_norm, name="MidAttention")(x)
    for level in reversed(range(len(self.channel_multipliers))):
      filters = self.filters * self.channel_multipliers[level]
      for _ in range(self.num_res_blocks):
        x = block(filters)(x)
      if level > 0:
        x = layers.upsample_nearest(x, 2)
        x = nn.Conv(filters, (3, 3), dtype=self.dtype)(x)
    x = layers.group_norm(self.group_norm, self.num_groups, self.dtype)(x)
    x = layers.get_activation(self.activation)(x)
    return nn.Conv(self.output_dim, (3, 3), dtype=self.dtype)(x)


class VectorQuantizer(nn.Module):
  """Nearest-code vector quantizer with a straight-through estimator.

  Attributes:
    codebook_size: number of codes K.
    embedding_dim: channels of the encoder output D.
    commitment_cost: weight of `|sg(q) - z|^2` (the codebook term
      `|q - sg(z)|^2` has weight 1), as released: 0.25.
    entropy_loss_ratio: weight of the entropy loss (0 disables it).
    entropy_temperature: temperature of the code affinities in it.
    entropy_loss_type: "softmax" or "argmax".
    code_dim: if set, a factorised code: z is projected to `code_dim` for the
      lookup (Dense `in_proj`) and back to D after it (Dense `out_proj`).
    l2_normalized: cosine lookup: z and codes are l2-normalised.
    compute_stats: also return `codebook_usage` (fraction of codes used in
      the batch) and `perplexity` (exp of the entropy of the code histogram).
    gradient: how the training output's gradient reaches `x`:
      "straight_through" (the release's: copied unchanged) or "rotation"
      (the rotation trick of Fifty et al., "Restructuring Vector Quantization
      with the Rotation Trick", ICLR 2025: the gradient is rotated by the
      rotation that takes the feature to its code, and scaled by their norm
      ratio, so that features on the same side of a code move together).
      The forward value is the code either way (to float rounding here).
  """
  codebook_size: int
  embedding_dim: int
  commitment_cost: float = 0.25
  entropy_loss_ratio: float = 0.1
  entropy_temperature: float = 0.01
  entropy_loss_type: str = "softmax"
  code_dim: Optional[int] = None
  l2_normalized: bool = False
  compute_stats: bool = False
  dtype: Dtype = jnp.float32
  gradient: str = "straight_through"

  def setup(self):
    if self.gradient not in losses.QUANTIZER_GRADIENTS:
      raise ValueError(f"VectorQuantizer.gradient={self.gradient!r}: expected "
                       f"one of {losses.QUANTIZER_GRADIENTS}.")
    dim = self.code_dim or self.embedding_dim
    self.codebook = self.param(
        "codebook",
        nn.initializers.variance_scaling(1.0, "fan_in", "uniform"),
        (self.codebook_size, dim))
    if self.code_dim:
      self.in_proj = nn.Dense(self.code_dim, dtype=self.dtype, name="in_proj")
      self.out_proj = nn.Dense(
          self.embedding_dim, dtype=self.dtype, name="out_proj")

  def _codes(self) -> jax.Array:
    codebook = jnp.asarray(self.codebook, self.dtype)
    return layers.l2_normalize(codebook) if self.l2_normalized else codebook

  def _to_code_space(self, x):
    z = self.in_proj(x) if self.code_dim else x
    return layers.l2_normalize(z) if self.l2_normalized else z

  def _from_code_space(self, q):
    return self.out_proj(q) if self.code_dim else q

  def __call__(self, x: jax.Array, train: bool = False):
    """Quantizes `x`.

    Args:
      x: `[..., D]` encoder features.
      train: apply the straight-through estimator (the output's gradient
        flows to `x`); in eval mode the output is exactly the code vectors.

    Returns:
      `(quantized [..., D], result)` with `result` holding `quantizer_loss`,
      `e_latent_loss`, `q_latent_loss`, `entropy_loss` (float32 scalars),
      `encoding_indices` int32 `[...]`, `code_features` (the features in code
      space, `[..., code_dim or D]`) and, if `compute_stats`,
      `codebook_usage` and `perplexity`.
    """
    z = self._to_code_space(x)
    codes = self._codes()
    flat = jnp.reshape(z, (-1, z.shape[-1]))
    distances = losses.squared_euclidean_distance(flat, codes)
    distances = jnp.reshape(distances, z.shape[:-1] + (self.codebook_size,))
    ids = jnp.argmin(distances, axis=-1).astype(jnp.int32)
    q = jnp.take(codes, ids, axis=0)

    e_latent = jnp.mean((jax.lax.stop_gradient(q) - z)**2) * self.commitment_cost
    q_latent = jnp.mean((q - jax.lax.stop_gradient(z))**2)
    entropy = jnp.zeros((), jnp.float32)
    if self.entropy_loss_ratio:
      entropy = losses.entropy_loss(
          -distances, loss_type=self.entropy_loss_type,
          temperature=self.entropy_temperature) * self.entropy_loss_ratio
    result = dict(
        e_latent_loss=jnp.asarray(e_latent, jnp.float32),
        q_latent_loss=jnp.asarray(q_latent, jnp.float32),
        entropy_loss=jnp.asarray(entropy, jnp.float32),
        encoding_indices=ids, code_features=z)
    result["quantizer_loss"] = (result["e_latent_loss"] +
                                result["q_latent_loss"] + result["entropy_loss"])
    if self.compute_stats:
      result.update(codebook_stats(ids, self.codebook_size))
    if train:
      q = (losses.rotation_trick(z, q) if self.gradient == "rotation"
           else z + jax.lax.stop_gradient(q - z))
    return self._from_code_space(q), result

  def code_features(self, x: jax.Array) -> jax.Array:
    """Encoder features `[..., D]` in the space of the codes (`[..., code_dim]`
    if factorised, l2-normalised if `l2_normalized`): what codes are matched
    against, and what dead codes are restarted from."""
    return self._to_code_space(x)

  def decode_ids(self, ids: jax.Array) -> jax.Array:
    """Code ids `[...]` -> features `[..., D]`."""
    return self._from_code_space(jnp.take(self._codes(), ids, axis=0))


def codebook_stats(ids: jax.Array, codebook_size: int):
  """Usage (fraction of codes that occur) and perplexity of the code histogram."""
  counts = jnp.bincount(jnp.ravel(ids), length=codebook_size)
  probs = counts / jnp.maximum(jnp.sum(counts), 1)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.))
  return dict(codebook_usage=jnp.mean((counts > 0).astype(jnp.float32)),
              perplexity=jnp.exp(entropy).astype(jnp.float32))


class VQVAE(nn.Module):
  """The tokenizer: encoder, quantizer, decoder (release names kept).

  Images are float `[batch, H, W, channels]` in [0, 1]; H and W divisible by
  `downsample_factor`. `remat` rematerialises each residual block in the
  backward pass ("none", "minimal", "full"; see `layers.remat`); the
  variables are the same.
  """
  filters: int = 128
  channel_multipliers: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  embedding_dim: int = 256
  codebook_size: int = 1024
  channels: int = 3
  num_groups: int = 32
  activation: str = "swish"
  conv_downsample: bool = False
  release_shortcut: bool = True
  commitment_cost: float = 0.25
  entropy_loss_ratio: float = 0.1
  entropy_temperature: float = 0.01
  entropy_loss_type: str = "softmax"
  code_dim: Optional[int] = None
  l2_normalized: bool = False
  compute_stats: bool = False
  dtype: Dtype = jnp.float32
  remat: str = "none"
  encoder_spatial_levels: Optional[int] = None
  group_norm: str = "reduce"
  quantizer_gradient: str = "straight_through"
  decoder_attention: bool = False

  @classmethod
  def from_preset(cls, name: str, **overrides) -> "VQVAE":
    """A tokenizer of a named size ("imagenet", "small", "tiny")."""
    if name not in PRESETS:
      raise ValueError(
          f"Unknown tokenizer preset {name!r}; expected one of {sorted(PRESETS)}.")
    return cls(**{**PRESETS[name], **overrides})

  @classmethod
  def field_names(cls):
    return [f.name for f in dataclasses.fields(cls)
            if f.name not in ("parent", "name")]

  @property
  def downsample_factor(self) -> int:
    return 2**(len(self.channel_multipliers) - 1)

  def setup(self):
    common = dict(
        filters=self.filters, channel_multipliers=tuple(self.channel_multipliers),
        num_res_blocks=self.num_res_blocks, num_groups=self.num_groups,
        activation=self.activation, release_shortcut=self.release_shortcut,
        dtype=self.dtype, remat=self.remat, group_norm=self.group_norm)
    self.encoder = Encoder(
        embedding_dim=self.embedding_dim, conv_downsample=self.conv_downsample,
        spatial_levels=self.encoder_spatial_levels, **common)
    self.decoder = Decoder(output_dim=self.channels,
                           attention=self.decoder_attention, **common)
    self.quantizer = VectorQuantizer(
        codebook_size=self.codebook_size, embedding_dim=self.embedding_dim,
        commitment_cost=self.commitment_cost,
        entropy_loss_ratio=self.entropy_loss_ratio,
        entropy_temperature=self.entropy_temperature,
        entropy_loss_type=self.entropy_loss_type, code_dim=self.code_dim,
        l2_normalized=self.l2_normalized, compute_stats=self.compute_stats,
        dtype=self.dtype, gradient=self.quantizer_gradient)

  def encode(self, images: jax.Array, train: bool = False):
    """Images -> `(quantized [b, h, w, D], result dict)` (see VectorQuantizer)."""
    return self.quantizer(self.encoder(images), train=train)

  def decode(self, quantized: jax.Array) -> jax.Array:
    """Quantized features `[b, h, w, D]` -> images `[b, H, W, channels]`."""
    return self.decoder(quantized)

  def encode_to_indices(self, images: jax.Array) -> jax.Array:
    """Images `[b, H, W, C]` -> int32 code ids `[b, H/f, W/f]`."""
    _, result = self.quantizer(self.encoder(images), train=False)
    return result["encoding_indices"]

  def decode_from_indices(self, ids: jax.Array) -> jax.Array:
    """Code ids `[b, h, w]` -> images `[b, h*f, w*f, channels]`."""
    return self.decoder(self.quantizer.decode_ids(ids))

  def __call__(self, images: jax.Array, train: bool = False):
    """Reconstructs images: `(reconstructions [b, H, W, C], result dict)`."""
    quantized, result = self.encode(images, train=train)
    return self.decoder(quantized), result
