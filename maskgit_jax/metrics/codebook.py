"""Codebook usage and perplexity of VQ token ids.

For token ids collected over a data set (any shape, e.g. `[N, h, w]`):
  usage      = (#codes used at least once) / codebook_size
  perplexity = exp(H(p)), H the natural-log entropy of the code histogram
               p_c = count_c / total; 1 if a single code is used,
               codebook_size if all codes are used uniformly.
"""
import numpy as np


def code_histogram(token_ids, codebook_size: int) -> np.ndarray:
  """`[codebook_size]` int64 counts of each code.

  Raises:
    ValueError: empty input, non-integer ids, or ids outside
      [0, codebook_size).
  """
  if codebook_size < 1:
    raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
  ids = np.asarray(token_ids)
  if ids.size == 0:
    raise ValueError("no token ids given")
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
  lo, hi = int(ids.min()), int(ids.max())
  if lo < 0 or hi >= codebook_size:
    raise ValueError(f"token ids must lie in [0, {codebook_size}), got "
                     f"range [{lo}, {hi}]")
  return np.bincount(ids.ravel(), minlength=codebook_size).astype(np.int64)


def usage_from_histogram(counts) -> float:
  counts = np.asarray(counts)
  return float(np.count_nonzero(counts) / counts.shape[0])


def perplexity_from_histogram(counts) -> float:
  counts = np.asarray(counts, np.float64)
  total = counts.sum()
  if total <= 0:
    raise ValueError("empty histogram")
  p = counts[counts > 0] / total
  return float(np.exp(-np.sum(p * np.log(p))))


def codebook_usage(token_ids, codebook_size: int) -> float:
  """Fraction of the codebook used (in [0, 1]; x100 for %)."""
  return usage_from_histogram(code_histogram(token_ids, codebook_size))


def codebook_perplexity(token_ids, codebook_size: int) -> float:
  """exp(entropy) of the code histogram, in [1, codebook_size]."""
  return perplexity_from_histogram(code_histogram(token_ids, codebook_size))


def codebook_stats(token_ids, codebook_size: int) -> dict[str, float]:
  """{'usage', 'usage_percent', 'num_used', 'perplexity'} in one pass."""
  counts = code_histogram(token_ids, codebook_size)
  usage = usage_from_histogram(counts)
  return {
      "usage": usage,
      "usage_percent": 100.0 * usage,
      "num_used": float(np.count_nonzero(counts)),
      "perplexity": perplexity_from_histogram(counts),
  }
