"""Multi-process (multi-host) start-up on JAX's own distributed runtime.

`train`, `sample` and `evaluate` call `initialize_from_flags()` first thing.
The flags (each defaults from the environment variable in brackets):

  --distributed=auto|on|off         [MASKGIT_DISTRIBUTED]
      auto: initialize when the environment says this is one of several
            processes: SLURM with more than one task (SLURM_NTASKS > 1), a
            coordinator address [JAX_COORDINATOR_ADDRESS], a Cloud TPU VM
            (a /dev/accel* or /dev/vfio device and libtpu installed; JAX
            reads the slice's workers from the metadata server, one worker
            is fine) or GKE TPU workers [TPU_WORKER_HOSTNAMES]; otherwise
            run as a single process.
      on:   always call `jax.distributed.initialize`; without an address,
            JAX detects the cluster itself (Cloud TPU VM pod slices, SLURM,
            Open MPI, Kubernetes).
      off:  single process.
  --coordinator_address=host:port   [JAX_COORDINATOR_ADDRESS]
  --num_processes=N                 [JAX_NUM_PROCESSES]
  --process_id=I                    [JAX_PROCESS_ID]

Every process runs the same command. On CPU the processes talk through gloo
collectives (JAX's default), which is what the tests use: 2 processes on
localhost, 4 simulated devices each, equal to 1 process with 8 devices.
"""

import glob
import importlib.util
import os
from typing import Any, Optional

from absl import flags
import jax
import numpy as np

MODES = ("auto", "on", "off")

_MODE = flags.DEFINE_enum(
    "distributed", os.environ.get("MASKGIT_DISTRIBUTED", "auto"), MODES,
    "Multi-process start-up: auto (from SLURM / JAX_COORDINATOR_ADDRESS / "
    "TPU_WORKER_HOSTNAMES), on (jax.distributed.initialize, cluster "
    "auto-detected), off.")
_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0's coordinator [JAX_COORDINATOR_ADDRESS].")
_NUM = flags.DEFINE_integer(
    "num_processes", None, "Number of processes [JAX_NUM_PROCESSES].")
_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index [JAX_PROCESS_ID].")


def _env_int(name: str, environ) -> Optional[int]:
  value = environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} is not an "
                     "integer") from None


def on_cloud_tpu_vm() -> bool:
  """A TPU device file and libtpu: a Cloud TPU VM (any slice size)."""
  devices = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  return bool(devices) and importlib.util.find_spec("libtpu") is not None


def resolve(mode: str = "auto", coordinator_address: Optional[str] = None,
            num_processes: Optional[int] = None,
            process_id: Optional[int] = None,
            environ=None, tpu_vm: Optional[bool] = None) -> Optional[dict]:
  """The keyword arguments for `jax.distributed.initialize`, or None when
  this is a single-process run.

  Raises:
    ValueError: an unknown mode, or an inconsistent process count / id /
      address (the message names the flag and value).
  """
  environ = os.environ if environ is None else environ
  if mode not in MODES:
    raise ValueError(f"--distributed={mode!r}: expected one of {MODES}")
  if mode == "off":
    return None
  address = coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS")
  count = num_processes if num_processes is not None else _env_int(
      "JAX_NUM_PROCESSES", environ)
  index = process_id if process_id is not None else _env_int(
      "JAX_PROCESS_ID", environ)
  if count is not None and count < 1:
    raise ValueError(f"--num_processes={count} must be at least 1")
  if index is not None and (index < 0 or (count is not None and
                                          index >= count)):
    raise ValueError(f"--process_id={index} must be in [0, "
                     f"{count if count is not None else 'num_processes'})")
  if address is not None and (":" not in address or
                              not address.rsplit(":", 1)[1].isdigit()):
    raise ValueError(f"--coordinator_address={address!r} must be host:port")
  explicit = {k: v for k, v in (("coordinator_address", address),
                                ("num_processes", count),
                                ("process_id", index)) if v is not None}
  if mode == "on":
    return explicit
  # auto
  if address is not None:
    if count is None or index is None:
      raise ValueError(
          f"coordinator address {address} given without --num_processes and "
          "--process_id (or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
    return explicit if count > 1 else None
  if count is not None and count > 1:
    raise ValueError(f"--num_processes={count} needs --coordinator_address "
                     "(or JAX_COORDINATOR_ADDRESS)")
  slurm_tasks = _env_int("SLURM_NTASKS", environ) or 1
  if "SLURM_JOB_ID" in environ and slurm_tasks > 1:
    return explicit
  workers = [w for w in environ.get("TPU_WORKER_HOSTNAMES", "").split(",")
             if w.strip()]
  if len(workers) > 1:
    return explicit
  if on_cloud_tpu_vm() if tpu_vm is None else tpu_vm:
    return explicit
  return None


_initialized = False


def initialize(mode: str = "auto", coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> bool:
  """Starts JAX's distributed runtime when needed (see module doc); returns
  whether it did. Call before anything else uses JAX."""
  global _initialized
  kwargs = resolve(mode, coordinator_address, num_processes, process_id)
  if kwargs is None or _initialized:
    return _initialized
  jax.distributed.initialize(**kwargs)
  _initialized = True
  return True


def initialize_from_flags() -> bool:
  """`initialize` with the `--distributed`, `--coordinator_address`,
  `--num_processes` and `--process_id` flags."""
  return initialize(_MODE.value, _ADDRESS.value, _NUM.value, _ID.value)


def is_primary() -> bool:
  """True on the process that writes logs, pictures and reports."""
  return jax.process_index() == 0


def to_host(tree: Any) -> Any:
  """numpy copies of a pytree of (possibly multi-process) arrays.

  Arrays that span several processes are gathered with a collective, so
  every process must call this at the same point; the result is the full
  array on every process.
  """
  def fully_addressable(x):
    return not isinstance(x, jax.Array) or x.is_fully_addressable

  if all(fully_addressable(x) for x in jax.tree.leaves(tree)):
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return jax.tree.map(
      lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))
      if isinstance(x, jax.Array) else x, tree)


def local_batch_split(batch_size: int):
  """`(batch, replicated)` shardings over this process's devices, for a
  host-side job (the token cache, the FID features) that splits batches of
  `batch_size` over them; `(None, None)` with one device or when they do
  not divide `batch_size` (the job then runs on one device)."""
  devices = jax.local_devices()
  if len(devices) < 2 or batch_size % len(devices):
    return None, None
  mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
  spec = jax.sharding.PartitionSpec
  return (jax.sharding.NamedSharding(mesh, spec("batch")),
          jax.sharding.NamedSharding(mesh, spec()))


def any_process(flag: bool) -> bool:
  """True if `flag` is True on any process (a collective when there are
  several processes; every process must call it at the same point)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  flags_ = multihost_utils.process_allgather(np.asarray([int(flag)], np.int32))
  return bool(np.asarray(flags_).any())


WAIT_SECONDS = 6 * 3600


def wait_for_all(name: str, timeout_seconds: int = WAIT_SECONDS) -> None:
  """A barrier on the distributed runtime's key-value service (no device
  collective, so it may wait for hours: process 0 evaluating or writing
  pictures while the others are done). JAX's own exit barrier waits only 5
  minutes, and gloo collectives 30 s. No-op for one process."""
  if jax.process_count() == 1:
    return
  # orbax's public multi-host helpers wrap the distributed client's barrier.
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  ocp.multihost.get_barrier_sync_fn()(key=name,
                                      timeout_ms=timeout_seconds * 1000)


def run_on_process_zero(work) -> None:
  """For `sample` and `evaluate`: starts the runtime from the flags (a bad
  value exits with one `error:` line), runs `work()` on process 0 only, and
  makes every process wait for it."""
  try:
    initialize_from_flags()
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  try:
    if is_primary():
      work()
  finally:
    wait_for_all("maskgit_exit")
