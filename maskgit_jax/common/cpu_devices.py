"""How many devices JAX makes of the host CPU: `config.cpu_devices`.

XLA:CPU runs one device's program on a shared pool of threads, and at the
embedded default's sizes most of its operations are too small to keep two
cores busy. Split into one device per core, the data-parallel train step
(batch sharded over the `data` mesh axis, parameters replicated) keeps both
busy: on the 2-core development machine the demo's stage-1 step takes 0.65x
and its stage-2 step 0.87x the time of one device (`benchmarks/train_step.py`
against `--cpu_devices=0`, in one session).

`config.cpu_devices`: 0 leaves JAX's default (one CPU device, or what
`XLA_FLAGS=--xla_force_host_platform_device_count=N` says); -1 makes one
device per core this process may use; N > 0 makes N. It only concerns the
CPU platform: with a GPU or TPU the accelerators are the devices either way.
The entry points apply it before JAX starts its backends; once they have
started (a notebook that already ran JAX, the tests) the count stays as it
is and `apply` says so.
"""

import os
from typing import Optional

import jax

from maskgit_jax.common import checks

FORCE_FLAG = "xla_force_host_platform_device_count"


def available_cores() -> int:
  """The cores this process may run on (its CPU affinity)."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except (AttributeError, OSError):
    return max(1, os.cpu_count() or 1)


def resolve(value, environ=None, cores: Optional[int] = None) -> Optional[int]:
  """The device count to set for `config.cpu_devices = value`, or None to
  leave JAX's. An explicit `--xla_force_host_platform_device_count` in
  XLA_FLAGS wins over -1 (one per core), not over an explicit N.

  Raises:
    ValueError: `value` is not an integer >= -1 (the message names the key).
  """
  if not checks.is_int(value, -1):
    checks.refuse("config.cpu_devices", value, "an integer: 0 (JAX's "
                  "default), -1 (one per core) or a count > 0")
  environ = os.environ if environ is None else environ
  if value == 0:
    return None
  if value == -1:
    if FORCE_FLAG in environ.get("XLA_FLAGS", ""):
      return None
    return available_cores() if cores is None else cores
  return value


def apply(value) -> Optional[str]:
  """Sets JAX's CPU device count from `config.cpu_devices`.

  Returns None when done or nothing to do, else one line saying why the
  count was left as it is (JAX's backends had already started)."""
  count = resolve(value)
  if count is None or count == jax.config.jax_num_cpu_devices:
    return None
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:
    return (f"note: config.cpu_devices={value} ignored: JAX has already "
            f"started with {jax.local_device_count()} device(s).")
  return None
