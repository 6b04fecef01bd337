"""The StyleGAN-style discriminator of the release's VQGAN training.

Images `[b, S, S, C]` (S >= 8; a side that is not a power of two is first
padded to one by repeating the edge pixels, e.g. Fashion-MNIST's 28 -> 32)
-> logits `[b, 1]`. Residual blocks halve the resolution down to 4x4 with
blur pooling (or average pooling), leaky ReLU 0.2, Xavier-uniform kernels.
Channel widths follow the release's table (512 up to 32x32, then 256, 128,
64, 32, 16 times `channel_multiplier`), capped at `max_filters` so that small
models fit a CPU.
Module names are the release's.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskgit_jax.nets import layers

_KERNEL_INIT = nn.initializers.xavier_uniform()
_BINOMIAL = {3: [1., 2., 1.], 4: [1., 3., 3., 1.], 5: [1., 4., 6., 4., 1.]}


def _leaky_relu(x):
  return jax.nn.leaky_relu(x, negative_slope=0.2)


def _blur_subsample_axis(x: jax.Array, taps, axis: int) -> jax.Array:
  """One axis of the blur: 'SAME'-padded 1-D filter `taps` at stride 2, as a
  sum of strided slices (n -> ceil(n / 2) along `axis`)."""
  n, k = x.shape[axis], len(taps)
  out = -(-n // 2)
  total = max((out - 1) * 2 + k - n, 0)
  pad = [(0, 0)] * x.ndim
  pad[axis] = (total // 2, total - total // 2)
  padded = jnp.pad(x, pad)
  y = None
  for i, tap in enumerate(taps):
    index = [slice(None)] * x.ndim
    index[axis] = slice(i, i + 2 * (out - 1) + 1, 2)
    term = padded[tuple(index)] * jnp.asarray(tap, x.dtype)
    y = term if y is None else y + term
  return y


class BlurPool2D(nn.Module):
  """Binomial blur then stride-2 subsampling. `[b,h,w,c]` -> `[b, ceil(h/2),
  ceil(w/2), c]`.

  The function of a depthwise `filter_size` x `filter_size` convolution
  ('SAME', stride 2) with the normalised binomial kernel, computed as two
  separable passes of strided slices: equal to that convolution to float
  rounding (tested), and on XLA:CPU about 35x faster in the backward pass
  that every GAN step runs (a grouped convolution's gradient takes its slow
  path there; README "Measured", the decoder-only GAN phase).
  """
  filter_size: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.filter_size not in _BINOMIAL:
      raise ValueError(f"filter_size must be one of {sorted(_BINOMIAL)}.")
    taps = [t / sum(_BINOMIAL[self.filter_size])
            for t in _BINOMIAL[self.filter_size]]
    return _blur_subsample_axis(_blur_subsample_axis(x, taps, 1), taps, 2)


class Conv3x3(nn.Module):
  """A 3x3 'SAME' convolution computed as patches @ kernel.

  The same variables as `nn.Conv(features, (3, 3))` (`kernel` [3, 3, in,
  out], `bias` [out]) and the same function; its kernel gradient is a matmul
  instead of a convolution, which XLA:CPU otherwise runs on a slow path
  inside the GAN step (about 0.5 s per layer at 32x32; see the README's
  stage-1 ablation). `[b, h, w, in]` -> `[b, h, w, features]`.
  """
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    kernel = self.param("kernel", _KERNEL_INIT, (3, 3, cin, self.features))
    patches = jax.lax.conv_general_dilated_patches(
        x, (3, 3), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)
    # Patch features are ordered (in channel, row, column).
    k = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin * 9, self.features)
    y = jnp.einsum("bhwk,kf->bhwf", patches, k.astype(x.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class Conv1x1(nn.Module):
  """A bias-free 1x1 convolution as a matmul over channels: the variables of
  `nn.Conv(features, (1, 1), use_bias=False)` (`kernel` [1, 1, in, out]) and
  its function; on XLA:CPU its kernel gradient inside the R1 penalty's double
  backward is otherwise a slow convolution. `[b, h, w, in]` -> `[b, h, w,
  features]`."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", _KERNEL_INIT,
                        (1, 1, x.shape[-1], self.features))
    return jnp.einsum("bhwk,kf->bhwf", x, kernel[0, 0].astype(x.dtype))


def _conv3x3(features: int, as_matmul: bool, name: str) -> nn.Module:
  if as_matmul:
    return Conv3x3(features, name=name)
  return nn.Conv(features, (3, 3), kernel_init=_KERNEL_INIT, name=name)


class DiscriminatorBlock(nn.Module):
  """Conv, act, downsample; 1x1-projected downsampled shortcut; conv, act."""
  filters: int
  blur_resample: bool = True
  conv_as_matmul: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    x = _leaky_relu(_conv3x3(x.shape[-1], self.conv_as_matmul, "Conv_0")(x))
    if self.blur_resample:
      x, residual = BlurPool2D()(x), BlurPool2D()(residual)
    else:
      x, residual = layers.avg_pool_2x2(x), layers.avg_pool_2x2(residual)
    if self.conv_as_matmul:
      residual = Conv1x1(self.filters, name="Conv_1")(residual)
    else:
      residual = nn.Conv(self.filters, (1, 1), use_bias=False, name="Conv_1",
                         kernel_init=_KERNEL_INIT)(residual)
    x = _leaky_relu(_conv3x3(self.filters, self.conv_as_matmul, "Conv_2")(x))
    return (residual + x) / math.sqrt(2)


def pad_to_power_of_two(x: jax.Array) -> jax.Array:
  """`[b, s, s, c]` -> `[b, p, p, c]`, p the smallest power of two >= s, by
  repeating the edge pixels (the pad split evenly, the odd pixel after):
  real and generated images get the same deterministic border, so the
  discriminator judges only their content. A power-of-two input is returned
  as it is (the release's sizes)."""
  size = x.shape[1]
  target = 1 << (size - 1).bit_length()
  if target == size:
    return x
  before = (target - size) // 2
  after = target - size - before
  return jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)),
                 mode="edge")


class Discriminator(nn.Module):
  """StyleGAN discriminator. Attributes: widths and resampling."""
  channel_multiplier: int = 1
  max_filters: int = 512
  blur_resample: bool = True
  # Convolutions as matmuls (`Conv3x3`: patches @ kernel; `Conv1x1`): the
  # same variables and function, with 9x the activation memory of each 3x3
  # layer's input. Faster on XLA:CPU only for a step that runs the GAN
  # inside a `lax.cond` branch; the trainer compiles each phase without one,
  # and there the convolutions are faster (tokenizer_task.conv_as_matmul).
  conv_as_matmul: bool = False

  def filters(self, size: int) -> int:
    table = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    width = 512 if size <= 32 else table[size] * self.channel_multiplier
    return min(width, self.max_filters)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    size = x.shape[1]
    if x.shape[1] != x.shape[2] or size < 8:
      raise ValueError(f"Discriminator input must be square with a side >= "
                       f"8, got {x.shape[1:3]}.")
    x = pad_to_power_of_two(x)
    size = x.shape[1]
    x = _leaky_relu(_conv3x3(self.filters(size), self.conv_as_matmul,
                             "Conv_0")(x))
    for i in range(int(math.log2(size)), 2, -1):
      x = DiscriminatorBlock(self.filters(2**(i - 1)), self.blur_resample,
                             self.conv_as_matmul,
                             name=f"ResBlock_{int(math.log2(size)) - i}")(x)
    x = _leaky_relu(_conv3x3(self.filters(4), self.conv_as_matmul,
                             "Conv_1")(x))
    x = x.reshape((x.shape[0], -1))
    x = _leaky_relu(nn.Dense(self.filters(4), kernel_init=_KERNEL_INIT)(x))
    return nn.Dense(1, kernel_init=_KERNEL_INIT)(x)
