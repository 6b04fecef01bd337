"""k-NN precision / recall (Kynkaanniemi et al. 2019), density / coverage.

Each feature set is turned into a manifold estimate: the union of balls
around its points, ball i having radius r_i = distance from point i to its
k-th nearest neighbour within the same set (k = 3 by default). With real
features x_1..x_N (radii r_i) and generated ones y_1..y_M (radii s_j):
  precision = fraction of generated points inside the real manifold:
              (1/M) sum_j 1[exists i: |y_j - x_i| <= r_i]
  recall    = fraction of real points inside the generated manifold:
              (1/N) sum_i 1[exists j: |x_i - y_j| <= s_j]
Also (Naeem et al. 2020, real radii only):
  density   = (1/(k M)) sum_j sum_i 1[|y_j - x_i| <= r_i]
  coverage  = (1/N) sum_i 1[min_j |x_i - y_j| < r_i]
The inclusive `<=` follows the StyleGAN / prdc reference code.
"""
import numpy as np

from maskgit_jax.metrics import distances

DEFAULT_K = 3


def manifold_radii(features, k: int = DEFAULT_K,
                   block_size: int = distances.DEFAULT_BLOCK_SIZE
                   ) -> np.ndarray:
  """`[N]` k-th nearest neighbour radii of `[N, D]` features."""
  return distances.kth_neighbor_distances(features, k, block_size)


def _balls_containing(queries, centres, radii, block_size) -> np.ndarray:
  """`[Q]`: number of balls (centres[i], radii[i]) containing each query."""
  counts = np.empty(np.asarray(queries).shape[0], np.int64)
  for start, d in distances.distance_blocks(queries, centres, block_size):
    counts[start:start + d.shape[0]] = np.sum(d <= radii[None, :], axis=1)
  return counts


def precision_recall(real_features, fake_features, k: int = DEFAULT_K,
                     block_size: int = distances.DEFAULT_BLOCK_SIZE
                     ) -> dict[str, float]:
  """Improved precision and recall.

  Args:
    real_features: `[N, D]`.
    fake_features: `[M, D]` (generated).
    k: neighbourhood size of the manifold radii.
    block_size: rows per distance block.

  Returns:
    {'precision': float, 'recall': float}, both in [0, 1].
  """
  real_radii = manifold_radii(real_features, k, block_size)
  fake_radii = manifold_radii(fake_features, k, block_size)
  precision = np.mean(
      _balls_containing(fake_features, real_features, real_radii,
                       block_size) > 0)
  recall = np.mean(
      _balls_containing(real_features, fake_features, fake_radii,
                       block_size) > 0)
  return {"precision": float(precision), "recall": float(recall)}


def prdc(real_features, fake_features, k: int = DEFAULT_K,
         block_size: int = distances.DEFAULT_BLOCK_SIZE) -> dict[str, float]:
  """Precision, recall, density and coverage (see module docstring).

  Returns:
    {'precision', 'recall', 'density', 'coverage'} floats; density can
    exceed 1.
  """
  real = np.asarray(real_features, np.float64)
  fake = np.asarray(fake_features, np.float64)
  real_radii = manifold_radii(real, k, block_size)
  fake_radii = manifold_radii(fake, k, block_size)
  inside_real = _balls_containing(fake, real, real_radii, block_size)
  recall = np.mean(_balls_containing(real, fake, fake_radii, block_size) > 0)
  nearest_fake = np.empty(real.shape[0], np.float64)
  for start, d in distances.distance_blocks(real, fake, block_size):
    nearest_fake[start:start + d.shape[0]] = d.min(axis=1)
  return {
      "precision": float(np.mean(inside_real > 0)),
      "recall": float(recall),
      "density": float(np.sum(inside_real) / (k * fake.shape[0])),
      "coverage": float(np.mean(nearest_fake < real_radii)),
  }
