"""Blocked pairwise Euclidean distances and k-nearest-neighbour queries.

Everything is float64 numpy, computed in row blocks so that an N x M distance
matrix never has to be held in memory at once (N, M of 10^4-10^5 are
typical for FID-sized feature sets).
"""
from typing import Iterator

import numpy as np

DEFAULT_BLOCK_SIZE = 1024


def _as_features(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"{name} must be [num, dim] features, got shape "
                     f"{x.shape}")
  if x.shape[0] == 0:
    raise ValueError(f"{name} is empty")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} has non-finite values")
  return x


def distance_blocks(a: np.ndarray, b: np.ndarray,
                    block_size: int = DEFAULT_BLOCK_SIZE
                    ) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (row_start, distances[rows, M]) for blocks of rows of `a`.

  Args:
    a: `[N, D]` features.
    b: `[M, D]` features.
    block_size: rows of `a` per block.

  Yields:
    `(start, d)` with `d[i, j] = ||a[start + i] - b[j]||_2`, float64.
  """
  a = _as_features(a, "a")
  b = _as_features(b, "b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
  if block_size < 1:
    raise ValueError(f"block_size must be >= 1, got {block_size}")
  b_sq = np.sum(b * b, axis=1)
  for start in range(0, a.shape[0], block_size):
    rows = a[start:start + block_size]
    d2 = np.sum(rows * rows, axis=1)[:, None] + b_sq[None, :] - 2.0 * (
        rows @ b.T)
    yield start, np.sqrt(np.maximum(d2, 0.0))


def pairwise_distances(a, b, block_size: int = DEFAULT_BLOCK_SIZE
                       ) -> np.ndarray:
  """Full `[N, M]` Euclidean distance matrix (float64)."""
  return np.concatenate([d for _, d in distance_blocks(a, b, block_size)])


def kth_neighbor_distances(x, k: int,
                           block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
  """Distance from each row of `x` to its k-th nearest *other* row.

  The point itself (distance 0) is neighbour 0, so this is the (k+1)-th
  smallest entry of each distance row, as in Kynkaanniemi et al.'s and the
  StyleGAN / prdc reference code; exact duplicates count as neighbours.

  Args:
    x: `[N, D]` features, N > k.
    k: neighbourhood size, >= 1.

  Returns:
    `[N]` float64 radii.
  """
  x = _as_features(x, "features")
  if k < 1 or x.shape[0] <= k:
    raise ValueError(f"need 1 <= k < num points, got k={k} with "
                     f"{x.shape[0]} points")
  out = np.empty(x.shape[0], np.float64)
  for start, d in distance_blocks(x, x, block_size):
    # The diagonal is exactly 0 in exact arithmetic; force it.
    rows = np.arange(d.shape[0])
    d[rows, start + rows] = 0.0
    out[start:start + d.shape[0]] = np.partition(d, k, axis=1)[:, k]
  return out


def nearest_neighbors(queries, keys, k: int,
                      block_size: int = DEFAULT_BLOCK_SIZE
                      ) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest `keys` of each query, sorted by distance.

  Args:
    queries: `[Q, D]`.
    keys: `[M, D]`, M >= k.
    k: number of neighbours.

  Returns:
    (distances `[Q, k]` float64, indices `[Q, k]` int64), ascending distance
    (which of several equidistant keys at the k-th place is kept is
    unspecified).
  """
  keys = _as_features(keys, "keys")
  if k < 1 or k > keys.shape[0]:
    raise ValueError(f"need 1 <= k <= num keys, got k={k} with "
                     f"{keys.shape[0]} keys")
  dists, idxs = [], []
  for _, d in distance_blocks(queries, keys, block_size):
    if k < d.shape[1]:
      part = np.argpartition(d, k - 1, axis=1)[:, :k]
    else:
      part = np.broadcast_to(np.arange(d.shape[1]), d.shape).copy()
    part_d = np.take_along_axis(d, part, axis=1)
    order = np.lexsort((part, part_d), axis=1)
    idxs.append(np.take_along_axis(part, order, axis=1))
    dists.append(np.take_along_axis(part_d, order, axis=1))
  return np.concatenate(dists), np.concatenate(idxs).astype(np.int64)
