"""Timing shared by the benchmark scripts (run them as `python benchmarks/X.py`)."""
import os
import statistics
import time
from typing import Callable, Dict, List, Optional

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


def interleaved_times(fns: Dict[str, Callable[[], object]], repeats: int,
                      warmup: bool = True,
                      cpu: Optional[Dict[str, List[float]]] = None
                      ) -> Dict[str, List[float]]:
  """Wall times of several functions, run in turn `repeats` times.

  Round r runs every function once (in the given order) before round r + 1
  starts, so a slow spell on a shared machine hits all of them alike and
  ratios of their medians stay meaningful. With `warmup`, every function
  runs once first, untimed (compilation). Returns {name: [seconds, ...]};
  when `cpu` is a dict it receives the process CPU seconds of each call
  (CPU / wall near the core count means the process had the machine).
  """
  if warmup:
    for fn in fns.values():
      jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  if cpu is not None:
    cpu.update({name: [] for name in fns})
  for _ in range(repeats):
    for name, fn in fns.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
      if cpu is not None:
        cpu[name].append(time.process_time() - start_cpu)
  return times


def median(values) -> float:
  return statistics.median(values)


def load_average() -> List[float]:
  """The 1, 5 and 15 minute load averages (other work skews timings)."""
  return [round(x, 2) for x in os.getloadavg()]
