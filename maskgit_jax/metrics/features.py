"""Batched, jitted FID Inception-v3 feature extraction.

`InceptionFeatureExtractor` loads the params once and runs two jitted
functions: the preprocessing (`inception.preprocess_images`: quantise,
nv_bilinear resize to 299, scale; compiled once per input shape) and the
network on a fixed `[batch_size, 299, 299, 3]` shape (compiled once). The
last, partial batch is zero-padded to `batch_size` and the padding rows are
dropped from the output, so every call reuses the same compiled network.

Accepted images (numpy or jax arrays):
  * uint8 in [0, 255], or float in [0, 1] (values outside are clipped);
  * `[N, H, W, 3]`, `[N, H, W, 1]` or `[N, H, W]` (grayscale is repeated to
    3 channels, as for Fashion-MNIST).
"""
import functools
import math
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.common import multihost
from maskgit_jax.nets import inception
from maskgit_jax.nets import inception_weights


def to_rgb_float01(images) -> np.ndarray | jax.Array:
  """Images -> `[N, H, W, 3]` float32 in [0, 1] (see module docstring)."""
  dtype = images.dtype
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError("images must be [N, H, W, 3], [N, H, W, 1] or [N, H, W]"
                     f", got shape {images.shape}")
  if dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  elif jnp.issubdtype(dtype, jnp.floating):
    images = images.astype(np.float32)
  else:
    raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1], "
                     f"got dtype {dtype}")
  if images.shape[-1] == 1:
    xp = jnp if isinstance(images, jax.Array) else np
    images = xp.repeat(images, 3, axis=-1)
  return images


# Images per step of the network on CPU: the batch runs as a loop over
# micro-batches of this size, whose working memory (about 40 MiB an image
# with the matmul convolutions) stays small: 1.1x the throughput of a whole
# batch of 32 and a sixth of its memory (benchmarks/inception_throughput.py).
CPU_MICRO_BATCH = 4


def network_function(batch_size: int, conv_impl: str = "auto",
                     micro_batch: int | None = None):
  """A jittable `f(params, x [batch_size, 299, 299, 3]) -> [batch_size, 2048]`.

  `conv_impl`: see `maskgit_jax.nets.conv.conv2d`. `micro_batch`: images
  per step of a `lax.map` over the batch (None: `CPU_MICRO_BATCH` on CPU, else the whole
  batch; a size that does not divide `batch_size` becomes their gcd).
  """
  net = inception.FIDInceptionV3(preprocess=False, conv_impl=conv_impl)
  if micro_batch is None:
    micro_batch = (CPU_MICRO_BATCH if jax.default_backend() == "cpu"
                   else batch_size)
  micro_batch = math.gcd(batch_size, max(1, micro_batch))

  def apply(params, x):
    if micro_batch == batch_size:
      return net.apply({"params": params}, x)
    chunks = x.reshape(batch_size // micro_batch, micro_batch, *x.shape[1:])
    feats = jax.lax.map(lambda c: net.apply({"params": params}, c), chunks)
    return feats.reshape(batch_size, inception.FEATURE_DIM)
  return apply


class InceptionFeatureExtractor:
  """Images -> `[N, 2048]` FID Inception-v3 pool features.

  Args:
    batch_size: fixed batch of the compiled network.
    params: a params tree from `inception_weights.load_params`; loaded if None.
    weights_path, cache_dir: passed to `inception_weights.load_params`.
    quantize: round to 8-bit levels first (the FID convention; see
      `inception.preprocess_images`).
    progress: show a tqdm bar over batches.
    shard_batch: split each batch over this process's local devices (when
      there are several and they divide `batch_size`; else one device).
  """

  def __init__(self, batch_size: int = 32, params=None, weights_path=None,
               cache_dir=None, quantize: bool = True,
               progress: bool = False, shard_batch: bool = False):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if params is None:
      params = inception_weights.load_params(weights_path, cache_dir)
    self.batch_size = batch_size
    self.quantize = quantize
    self.progress = progress
    self._sharding = None
    if shard_batch:
      self._sharding, replicated = multihost.local_batch_split(batch_size)
      if replicated is not None:
        params = jax.device_put(params, replicated)
    self.params = jax.device_put(params)
    # A batch split over devices runs whole on each (its share is small).
    self._network = jax.jit(network_function(
        batch_size, micro_batch=batch_size if self._sharding else None))
    self._preprocess = jax.jit(
        functools.partial(inception.preprocess_images, quantize=quantize))

  @property
  def feature_dim(self) -> int:
    return inception.FEATURE_DIM

  def _run_batch(self, batch) -> np.ndarray:
    n = batch.shape[0]
    if n < self.batch_size:
      pad = [(0, self.batch_size - n)] + [(0, 0)] * (batch.ndim - 1)
      xp = jnp if isinstance(batch, jax.Array) else np
      batch = xp.pad(batch, pad)
    if self._sharding is not None:
      batch = jax.device_put(batch, self._sharding)
    feats = self._network(self.params, self._preprocess(batch))
    return np.asarray(feats)[:n]

  def __call__(self, images) -> np.ndarray:
    """`[N, ...]` images -> `[N, 2048]` float32 features."""
    return self._extract(images, self.progress)

  def _extract(self, images, progress: bool) -> np.ndarray:
    images = to_rgb_float01(images)
    starts = range(0, images.shape[0], self.batch_size)
    if progress:
      import tqdm  # pylint: disable=g-import-not-at-top
      starts = tqdm.tqdm(starts, desc="inception features", unit="batch")
    out = [self._run_batch(images[s:s + self.batch_size]) for s in starts]
    if not out:
      return np.zeros((0, self.feature_dim), np.float32)
    return np.concatenate(out).astype(np.float32)

  def from_batches(self, batches: Iterable, limit: int | None = None
                   ) -> np.ndarray:
    """Features of a stream of image batches (e.g. a data set iterator).

    Args:
      batches: iterable of `[n_i, ...]` image arrays (any n_i; each is
        processed in chunks of `batch_size`).
      limit: stop after this many images (the last batch is truncated).

    Returns:
      `[min(total, limit), 2048]` float32.
    """
    if self.progress:
      import tqdm  # pylint: disable=g-import-not-at-top
      batches = tqdm.tqdm(batches, desc="inception features", unit="batch")
    out, seen = [], 0
    for batch in batches:
      if limit is not None:
        batch = batch[:limit - seen]
      if batch.shape[0] == 0:
        break
      out.append(self._extract(batch, progress=False))
      seen += batch.shape[0]
      if limit is not None and seen >= limit:
        break
    if not out:
      return np.zeros((0, self.feature_dim), np.float32)
    return np.concatenate(out)
