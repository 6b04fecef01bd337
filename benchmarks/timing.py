"""Timing shared by the benchmark scripts (run them as `python benchmarks/X.py`)."""
import statistics
import time

import jax


def median_time(fn, repeats: int) -> float:
  """Median wall time of `fn()` over `repeats` runs after one warm-up call
  (which compiles); results are waited for with `jax.block_until_ready`."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)
