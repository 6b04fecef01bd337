"""Reference (real-data) statistics for FID and precision/recall, cached.

A reference is computed once from real images and stored as one `.npz`:
`mu [D]`, `sigma [D, D]` (float64) and optionally the `features [N, D]`
(float32) that precision/recall, class fidelity and the FID floor need.
The cache file name is keyed by data set, split and image size (and
optionally the number of images), see `reference_cache_path`.
"""
import dataclasses
import json
import os
import pathlib
import re
import warnings
import zipfile
from typing import Callable

import numpy as np

from maskgit_jax.common import files
from maskgit_jax.metrics import fid


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
  """Real-data statistics.

  Attributes:
    mu: `[D]` float64 feature mean.
    sigma: `[D, D]` float64 feature covariance.
    num_images: number of feature vectors they were computed from.
    features: `[N, D]` float32 features, or None if not kept.
    metadata: free-form string dict stored alongside.
  """
  mu: np.ndarray
  sigma: np.ndarray
  num_images: int
  features: np.ndarray | None = None
  metadata: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def from_features(cls, features, keep_features: bool = True,
                    metadata: dict | None = None) -> "ReferenceStats":
    features = np.asarray(features, np.float32)
    mu, sigma = fid.compute_statistics(features)
    return cls(mu=mu, sigma=sigma, num_images=int(features.shape[0]),
               features=features if keep_features else None,
               metadata=dict(metadata or {}))

  def fid(self, features) -> float:
    """FID of `[N, D]` features against this reference."""
    mu, sigma = fid.compute_statistics(features)
    return fid.frechet_distance(mu, sigma, self.mu, self.sigma)

  def save(self, path: str | os.PathLike):
    """Writes the `.npz` atomically (temp file + rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"mu": self.mu, "sigma": self.sigma,
              "num_images": np.array(self.num_images),
              "metadata_json": np.array(json.dumps(self.metadata,
                                                   sort_keys=True))}
    if self.features is not None:
      arrays["features"] = self.features
    files.atomic_write(str(path), lambda p: np.savez(p, **arrays))

  @classmethod
  def load(cls, path: str | os.PathLike) -> "ReferenceStats":
    """Reads a file written by `save`; ValueError if it is not one."""
    path = pathlib.Path(path)
    try:
      with np.load(path, allow_pickle=False) as data:
        mu = np.asarray(data["mu"], np.float64)
        sigma = np.asarray(data["sigma"], np.float64)
        num_images = int(data["num_images"])
        features = (np.asarray(data["features"], np.float32)
                    if "features" in data.files else None)
        metadata = json.loads(str(data["metadata_json"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile,
            EOFError) as e:
      raise ValueError(f"{path}: not a reference statistics file ({e})"
                       ) from None
    d = mu.shape[0] if mu.ndim == 1 else -1
    if (d < 1 or sigma.shape != (d, d) or
        (features is not None and features.shape != (num_images, d))):
      raise ValueError(f"{path}: inconsistent reference statistics shapes "
                       f"mu {mu.shape}, sigma {sigma.shape}, features "
                       f"{None if features is None else features.shape}")
    return cls(mu=mu, sigma=sigma, num_images=num_images, features=features,
               metadata=metadata)


def _slug(value) -> str:
  text = str(value).strip()
  if not text:
    raise ValueError("reference cache key parts must be non-empty")
  return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def reference_cache_path(cache_dir: str | os.PathLike, dataset: str,
                         split: str, image_size: int | tuple[int, int],
                         num_images: int | None = None,
                         feature_net: str = "inception_v3") -> pathlib.Path:
  """`<cache_dir>/<dataset>_<split>_<H>x<W>[_n<N>]_<feature_net>.npz`."""
  if isinstance(image_size, int):
    image_size = (image_size, image_size)
  h, w = (int(s) for s in image_size)
  if h < 1 or w < 1:
    raise ValueError(f"image_size must be positive, got {image_size}")
  name = f"{_slug(dataset)}_{_slug(split)}_{h}x{w}"
  if num_images is not None:
    name += f"_n{int(num_images)}"
  name += f"_{_slug(feature_net)}.npz"
  return pathlib.Path(cache_dir) / name


def load_or_compute_reference(cache_path: str | os.PathLike,
                              compute_features: Callable[[], np.ndarray],
                              keep_features: bool = True,
                              metadata: dict | None = None
                              ) -> ReferenceStats:
  """Loads the reference at `cache_path`, or computes and caches it.

  Args:
    cache_path: the `.npz` (see `reference_cache_path`).
    compute_features: called only on a cache miss; returns `[N, D]` real
      features (e.g. `InceptionFeatureExtractor` over the real split).
    keep_features: also cache the features (needed for precision/recall,
      class fidelity and the FID floor). A cached file without features is
      recomputed when `keep_features` is True.
    metadata: string dict stored with the file (data set, split, ...).

  Returns:
    The ReferenceStats.
  """
  cache_path = pathlib.Path(cache_path)
  if cache_path.is_file():
    try:
      stats = ReferenceStats.load(cache_path)
      if stats.features is not None or not keep_features:
        return stats
    except ValueError as e:
      warnings.warn(f"recomputing reference statistics: {e}")
  stats = ReferenceStats.from_features(compute_features(), keep_features,
                                       metadata)
  stats.save(cache_path)
  return stats
