"""Reconstruction metrics: PSNR and SSIM on `[batch, H, W, C]` images.

Images are float in [0, max_val] (default [0, 1]). Both functions return one
value per image (`[batch]`, float32 jax arrays) and are jit-friendly.

SSIM is the standard single-scale SSIM of Wang et al. 2004 as in
`tf.image.ssim`: an 11x11 Gaussian window with sigma 1.5 (normalised to
sum 1), "valid" filtering (no padding), K1 = 0.01, K2 = 0.03,
C1 = (K1 L)^2, C2 = (K2 L)^2, biased local (co)variances
E[xy] - E[x]E[y], the SSIM map averaged over positions and channels.
The (co)variances are computed from images shifted by their per-channel
mean (exactly the same quantities, since the window sums to 1), which avoids
float32 cancellation in E[x^2] - E[x]^2 on flat images.
"""
import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_pair(a, b, name: str):
  a = jnp.asarray(a)
  b = jnp.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f"{name}: image shapes differ: {a.shape} vs {b.shape}")
  if a.ndim != 4:
    raise ValueError(f"{name} expects [batch, H, W, C] images, got shape "
                     f"{a.shape}")
  return a.astype(jnp.float32), b.astype(jnp.float32)


def psnr(a, b, max_val: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB per image.

  Args:
    a, b: `[batch, H, W, C]` images in [0, max_val].
    max_val: the dynamic range L.

  Returns:
    `[batch]`: 10 log10(L^2 / MSE); +inf for identical images.
  """
  a, b = _check_pair(a, b, "psnr")
  mse = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
  return 10.0 * jnp.log10(jnp.float32(max_val) ** 2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  """`[size]` normalised 1-D Gaussian (the SSIM window is its outer product)."""
  if size < 1 or sigma <= 0:
    raise ValueError(f"bad window size {size} / sigma {sigma}")
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-0.5 * (x / sigma) ** 2)
  return g / g.sum()


def _valid_filter_matrix(n: int, window: np.ndarray) -> np.ndarray:
  """[n - size + 1, n] matrix applying `window` at every valid position."""
  size = window.shape[0]
  m = np.zeros((n - size + 1, n), np.float64)
  for i in range(n - size + 1):
    m[i, i:i + size] = window
  return m.astype(np.float32)


def ssim(a, b, max_val: float = 1.0, filter_size: int = 11,
         filter_sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03) -> jax.Array:
  """Structural similarity per image (see module docstring).

  Args:
    a, b: `[batch, H, W, C]` images in [0, max_val], H, W >= filter_size.
    max_val: the dynamic range L.
    filter_size, filter_sigma: Gaussian window.
    k1, k2: stability constants.

  Returns:
    `[batch]` SSIM in [-1, 1]; 1 (up to rounding) for identical images.
  """
  a, b = _check_pair(a, b, "ssim")
  h, w = a.shape[1:3]
  if h < filter_size or w < filter_size:
    raise ValueError(f"ssim: images of {h}x{w} are smaller than the "
                     f"{filter_size}x{filter_size} window")
  g = gaussian_window(filter_size, filter_sigma)
  mh = jnp.asarray(_valid_filter_matrix(h, g))
  mw = jnp.asarray(_valid_filter_matrix(w, g))

  def blur(x):
    x = jnp.einsum("oh,bhwc->bowc", mh, x, precision=_HIGHEST)
    return jnp.einsum("pw,bowc->bopc", mw, x, precision=_HIGHEST)

  c1 = (k1 * max_val) ** 2
  c2 = (k2 * max_val) ** 2
  mu_a, mu_b = blur(a), blur(b)
  a0 = a - jnp.mean(a, axis=(1, 2), keepdims=True)
  b0 = b - jnp.mean(b, axis=(1, 2), keepdims=True)
  mu_a0, mu_b0 = blur(a0), blur(b0)
  var_a = blur(a0 * a0) - mu_a0 * mu_a0
  var_b = blur(b0 * b0) - mu_b0 * mu_b0
  cov = blur(a0 * b0) - mu_a0 * mu_b0
  num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
  den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
  return jnp.mean(num / den, axis=(1, 2, 3))
