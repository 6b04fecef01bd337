"""Frechet Inception Distance (Heusel et al. 2017) from features.

FID(N(mu1, S1), N(mu2, S2)) = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

Numerical protocol (that of pytorch-fid's `calculate_frechet_distance`, with
SciPy's current `sqrtm` API):
  * statistics are float64: mu = mean, sigma = `np.cov(rowvar=False)`
    (unbiased, N - 1);
  * (S1 S2)^(1/2) is `scipy.linalg.sqrtm(S1 @ S2)`;
  * when the product is near-singular - sqrtm returns non-finite values or
    emits a `LinAlgWarning` (singular matrix / inaccurate square root) - it
    is recomputed as `sqrtm((S1 + eps I) @ (S2 + eps I))`, eps = 1e-6;
  * tiny imaginary parts from rounding are discarded; if any diagonal entry
    of the square root has |imag| > 1e-3 a ValueError is raised (the
    statistics are then not covariance matrices, or far too few samples).
"""
import warnings

import numpy as np
import scipy.linalg

DEFAULT_EPS = 1e-6
IMAG_ATOL = 1e-3


def compute_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of features.

  Args:
    features: `[N, D]`, N >= 2.

  Returns:
    (mu `[D]`, sigma `[D, D]`), float64; sigma is the unbiased covariance.
  """
  x = np.asarray(features, np.float64)
  if x.ndim != 2:
    raise ValueError(f"features must be [num, dim], got shape {x.shape}")
  if x.shape[0] < 2:
    raise ValueError(f"need at least 2 feature vectors, got {x.shape[0]}")
  if not np.all(np.isfinite(x)):
    raise ValueError("features have non-finite values")
  return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
  """scipy sqrtm; also returns whether it signalled a near-singular input."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
    root = scipy.linalg.sqrtm(matrix)
  warned = any(issubclass(w.category, scipy.linalg.LinAlgWarning)
               for w in caught)
  return np.asarray(root), warned or not np.all(np.isfinite(root))


def frechet_distance(mu1, sigma1, mu2, sigma2,
                     eps: float = DEFAULT_EPS) -> float:
  """Frechet distance between two Gaussians (see module docstring).

  Args:
    mu1, mu2: `[D]` means.
    sigma1, sigma2: `[D, D]` covariances.
    eps: diagonal offset used when S1 S2 is near-singular.

  Returns:
    The distance (float, >= 0 up to rounding).

  Raises:
    ValueError: mismatched shapes, non-finite inputs, or a square root with
      a significant imaginary part.
  """
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.ndim != 1 or mu1.shape != mu2.shape:
    raise ValueError(f"means must be [D] vectors of the same length, got "
                     f"{mu1.shape} and {mu2.shape}")
  d = mu1.shape[0]
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"covariances must be [{d}, {d}], got {sigma1.shape} "
                     f"and {sigma2.shape}")
  for name, v in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1),
                  ("sigma2", sigma2)):
    if not np.all(np.isfinite(v)):
      raise ValueError(f"{name} has non-finite values")

  diff = mu1 - mu2
  covmean, near_singular = _sqrtm(sigma1 @ sigma2)
  if near_singular:
    offset = np.eye(d) * eps
    covmean, _ = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not np.all(np.isfinite(covmean)):
      raise ValueError("matrix square root is not finite even with the "
                       f"eps={eps} diagonal offset")
  if np.iscomplexobj(covmean):
    max_imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
    if max_imag > IMAG_ATOL:
      raise ValueError(
          f"sqrtm(sigma1 @ sigma2) has an imaginary component of {max_imag:g}"
          f" (> {IMAG_ATOL:g}): the covariances are not valid (too few "
          "samples or non-PSD input)")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * np.trace(covmean))


def fid_from_features(features1, features2, eps: float = DEFAULT_EPS
                      ) -> float:
  """FID between two `[N, D]` feature sets."""
  mu1, sigma1 = compute_statistics(features1)
  mu2, sigma2 = compute_statistics(features2)
  return frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps)


def split_disjoint(num_total: int, num_per_subset: int | None = None,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Two disjoint random index sets of equal size from range(num_total).

  Args:
    num_total: number of items.
    num_per_subset: size of each subset; default num_total // 2.
    seed: numpy seed for the permutation.

  Returns:
    Two sorted int64 index arrays of length num_per_subset.
  """
  if num_per_subset is None:
    num_per_subset = num_total // 2
  if num_per_subset < 2 or 2 * num_per_subset > num_total:
    raise ValueError(
        f"cannot draw two disjoint subsets of {num_per_subset} (>= 2) items "
        f"from {num_total}")
  perm = np.random.default_rng(seed).permutation(num_total)
  return (np.sort(perm[:num_per_subset]),
          np.sort(perm[num_per_subset:2 * num_per_subset]))


def real_vs_real_fid(features, num_per_subset: int | None = None,
                     seed: int = 0, eps: float = DEFAULT_EPS) -> float:
  """The FID floor: FID between two disjoint random real subsets.

  FID is biased upwards at finite N, so a generated set of N images can
  only be judged against what N *real* images score against N others. Use
  the same N as the generated set (e.g. 10k vs 10k).

  Args:
    features: `[M, D]` real features, M >= 2 * num_per_subset.
    num_per_subset: images per subset; default M // 2.
    seed: subset selection seed.

  Returns:
    FID between the two subsets.
  """
  x = np.asarray(features)
  if x.ndim != 2:
    raise ValueError(f"features must be [num, dim], got shape {x.shape}")
  a, b = split_disjoint(x.shape[0], num_per_subset, seed)
  return fid_from_features(x[a], x[b], eps=eps)
