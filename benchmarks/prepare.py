"""Getting a benchmark's programs and state ready quickly on an accelerator
(benchmarks/gpu.py's five-minute budget).

- `on_host`: random initial state computed by the host CPU and then placed.
  XLA:GPU compiles a jitted init of a large model into hundreds of random
  number kernels (the 2026-12-04 H200 run: 79 s for the ImageNet stage-2
  state, 9 s + 1.6 s on a 2-core CPU); the values are the same either way
  (threefry is defined bit for bit on every backend).
- `host_hlo_flops`: XLA's FLOP count of a program before optimisation,
  lowered for the host CPU: XLA:GPU's lowered programs report none
  (jax 0.11.2 on the H200: 0.0 for the stage-1 step), and its compiled
  count leaves out what it hands to cuDNN.
- `compile_all`: lowered programs compiled on a thread pool. XLA compiles
  outside the GIL, so independent programs overlap their compilation.
"""
import concurrent.futures
import os
import time

import jax

from gpu_report import error_text  # benchmarks/gpu_report.py


def host_device():
  """The first CPU device (jax always has the CPU backend)."""
  return jax.local_devices(backend="cpu")[0]


def on_host(fn, *args, placement=None):
  """`jax.jit(fn)(*args)` computed on the host CPU, then `device_put` to
  `placement` (a sharding or device; default: jax's default device).
  Where the default device is a CPU already, that is the plain call and a
  placement on the same device."""
  with jax.default_device(host_device()):
    out = jax.block_until_ready(jax.jit(fn)(*args))
  return jax.device_put(out, jax.devices()[0] if placement is None
                        else placement)


def host_hlo_flops(fn, *args):
  """XLA's cost analysis FLOPs of `jax.jit(fn)` lowered (not compiled) for
  the host CPU, with the arguments' shapes and dtypes."""
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        args)
  with jax.default_device(host_device()):
    return cost_flops(jax.jit(fn).lower(*shapes).cost_analysis())


def cost_flops(cost):
  """The FLOPs of a jax `cost_analysis()` result (a dict, or a list of
  one per program); 0.0 where XLA gives none."""
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def compile_all(lowered, workers=None):
  """Compiles {name: jax Lowered} concurrently; programs whose lowered text
  is the same (e.g. one tokenizer's decoder timed for several samplers)
  are compiled once and shared.

  Returns ({name: compiled}, {name: seconds of its own compile, 0 for a
  shared one}, {name: error text}). A program that fails on the pool is
  compiled once more on its own (`seconds` then counts both tries); one
  that fails again is an error entry, and the others are compiled all the
  same."""
  first = {}  # lowered text -> the first name with it
  alias = {}
  for name, low in lowered.items():
    alias[name] = first.setdefault(low.as_text(), name)
  unique = {name: lowered[name] for name in dict.fromkeys(alias.values())}
  workers = workers or min(len(unique), max(1, os.cpu_count() or 1), 8)

  def one(item):
    name, low = item
    start = time.perf_counter()
    try:
      return name, low.compile(), time.perf_counter() - start, None
    except Exception as e:  # pylint: disable=broad-except
      return name, None, time.perf_counter() - start, error_text(e)
  compiled, seconds, errors = {}, {}, {}
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    results = list(pool.map(one, list(unique.items())))
  for name, c, s, err in results:
    if err is not None:  # alone this time, in case the overlap caused it
      _, c, again, err = one((name, unique[name]))
      s += again
    seconds[name] = s
    if err is None:
      compiled[name] = c
    else:
      errors[name] = err
  for name, source in alias.items():
    if name != source:
      seconds[name] = 0.0
      if source in compiled:
        compiled[name] = compiled[source]
      else:
        errors[name] = errors[source]
  return compiled, seconds, errors
