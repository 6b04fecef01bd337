"""The machine's matmul peak, which the benchmarks' utilisation figures are
read against: the best of square n x n matmuls, float32 accumulation
(train_step.py, sampler.py's floor, gpu.py)."""
import jax
import jax.numpy as jnp
import numpy as np

import timing  # benchmarks/timing.py

PEAK_SIZES = {"cpu": (512, 1024, 2048), "gpu": (2048, 4096, 8192)}


def peak_matmul_fn(dtype, n):
  """(fn, FLOPs): one n x n matmul, float32 accumulation, inputs ready."""
  rs = np.random.RandomState(n)
  a = jnp.asarray(rs.rand(n, n), dtype)
  b = jnp.asarray(rs.rand(n, n), dtype)
  return (lambda: _matmul(a, b)), 2.0 * n**3


_matmul = jax.jit(lambda x, y: jnp.matmul(x, y,
                                          preferred_element_type=jnp.float32))


def matmul_peak(dtype, sizes, repeats=5):
  """(best FLOP/s, {n: FLOP/s}) of n x n matmuls, float32 accumulation."""
  by_size = {}
  for n in sizes:
    fn, flops = peak_matmul_fn(dtype, n)
    by_size[n] = flops / timing.median_time(fn, repeats)
  return max(by_size.values()), by_size


def reference_is_bf16(gpu: bool, dtype_name: str) -> bool:
  """Whether a step is measured against the bfloat16 peak: on a GPU always
  (MFU), on a CPU when it computes in bfloat16."""
  return gpu or dtype_name == "bfloat16"
