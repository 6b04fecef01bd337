"""Checkpoints: orbax CheckpointManager, asynchronous, keep N, resume.

Each checkpoint holds the train state (model, optimizer, EMA, RNG, step, and
any stage-specific state) and the data iterator's state, saved together so a
resumed run sees exactly the batches an uninterrupted run would have seen.
A checkpoint that cannot be read is skipped with a warning naming it, and the
previous one is used. Nothing is deleted: the unreadable checkpoints newer
than the one resumed from are moved aside to `<step>.corrupt-<time>` (outside
orbax's step list, with a warning naming both paths), so the resumed run can
save those steps again and orbax's keep-N rotation never counts them.

Orbax's array files carry no checksum of the values: a flipped or zeroed byte
in an array data file restores silently wrong numbers. Each checkpoint
therefore also records a 32-bit fingerprint of every array of the state and
a CRC of the data iterator's state (in its JSON item), checked on restore; a
mismatch makes the checkpoint unreadable (above). The fingerprint is an
integer sum, so it does not depend on the sharding or the device count
(`fingerprints.py`). Checkpoints without fingerprints restore unchecked.
"""

import base64
import contextlib
import logging
import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import orbax.checkpoint as ocp

from maskgit_jax.common import checks
from maskgit_jax.common import multihost
from maskgit_jax.store.fingerprints import ChecksumError
from maskgit_jax.store.fingerprints import data_crc
from maskgit_jax.store.fingerprints import fingerprints
from maskgit_jax.store.fingerprints import flat_shapes
from maskgit_jax.store.fingerprints import verify_fingerprints


RETRIES = 2  # More tries of a checkpoint read that failed.
RETRY_SECONDS = 0.5


class CheckpointMismatch(ValueError):
  """A checkpoint whose variables do not fit the config's model."""


class CheckpointUnreadable(OSError, ValueError):
  """A checkpoint that could not be read, for a reason other than damage."""


def _encode_data_state(data_state: Any) -> Any:
  if isinstance(data_state, bytes):
    return {"bytes_b64": base64.b64encode(data_state).decode("ascii")}
  return {"value": data_state}


def _decode_data_state(blob: Any) -> Any:
  if not blob:
    return None
  if "bytes_b64" in blob:
    return base64.b64decode(blob["bytes_b64"])
  return blob.get("value")


class Checkpointer:
  """Saves and restores `(state, data_state)` under `directory`."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    # Orbax's max_to_keep=0 deletes every checkpoint right after saving it.
    checks.check_int("keep_checkpoints", keep, low=1, allow_none=True,
                     note="the newest checkpoints kept; None: all")
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, data_state: Any = None,
           force: bool = True) -> None:
    if step in self.manager.all_steps():
      return
    blob = _encode_data_state(data_state)
    blob["data_crc32"] = data_crc(blob)
    blob["checksums"] = fingerprints(state)
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_one_copy(state)),
            data=ocp.args.JsonSave(blob)),
        force=force)

  def restore(self, step: int, abstract_state: Any) -> Tuple[Any, Any]:
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
    verify_fingerprints(restored["data"], restored["state"],
                        os.path.join(self.directory, str(step)))
    return restored["state"], _decode_data_state(restored["data"])

  def check_fits(self, step: int, abstract_state: Any) -> None:
    """Raises CheckpointMismatch when checkpoint `step` holds a state of
    another structure or shape than `abstract_state` (the config's model):
    the first parameter that differs, with both shapes. Metadata that cannot
    be read is left for `restore` to judge."""
    try:
      with read_only_manager(self.directory, item_handlers={
          "state": ocp.StandardCheckpointHandler()}) as manager:
        with quiet_orbax():
          metadata = manager.item_metadata(step)["state"]
      saved = flat_shapes(metadata) if metadata is not None else {}
    except Exception:  # pylint: disable=broad-except
      return
    wanted = flat_shapes(abstract_state)
    if not saved or not wanted:
      return
    where = os.path.join(self.directory, str(step))
    for name in sorted(set(saved) | set(wanted)):
      if name not in wanted:
        raise CheckpointMismatch(
            f"{where} does not fit the config: it has {name} "
            f"{saved[name]}, which the config's model does not have. The "
            "checkpoints are kept; train into a new --workdir or restore "
            "the settings that made them.")
      if name not in saved:
        raise CheckpointMismatch(
            f"{where} does not fit the config: it lacks {name} (the config's "
            f"model has {wanted[name]}). The checkpoints are kept; train into"
            " a new --workdir or restore the settings that made them.")
      if saved[name] != wanted[name]:
        raise CheckpointMismatch(
            f"{where} does not fit the config: {name} has shape "
            f"{saved[name]} in the checkpoint and {wanted[name]} in the "
            "config. The checkpoints are kept; train into a new --workdir or"
            " restore the settings that made them.")

  def _try_restore(self, step: int, abstract_state: Any, log):
    """(state, data_state, None) or (None, None, error) after retries; a
    passing I/O error gets `RETRIES` more tries."""
    error = None
    for attempt in range(RETRIES + 1):
      try:
        state, data_state = self.restore(step, abstract_state)
        return state, data_state, None
      except ChecksumError as e:  # The bytes are what they are.
        return None, None, e
      except Exception as e:  # pylint: disable=broad-except
        error = e
        if attempt < RETRIES:
          logging.info("reading checkpoint %s failed (%s: %s); retrying",
                       os.path.join(self.directory, str(step)),
                       type(e).__name__, str(e)[:200])
          time.sleep(RETRY_SECONDS * (attempt + 1))
    return None, None, error

  def restore_latest(self, abstract_state: Any,
                     log=logging.warning) -> Optional[Tuple[int, Any, Any]]:
    """The newest readable checkpoint as `(step, state, data_state)`, or None.

    - A checkpoint of another model (structure or shapes) stops the run with
      CheckpointMismatch, naming the first parameter that differs; nothing
      is renamed.
    - A checkpoint that cannot be read is tried again (a passing I/O error);
      an OSError other than a missing file (permissions, a lost mount) stops
      the run with CheckpointUnreadable and renames nothing.
    - A damaged checkpoint (failed fingerprint, unreadable or missing bytes)
      is moved aside (`set_aside`) once every process found it damaged, and
      the previous one is tried; the resumed run saves its step again. If
      the processes disagree, the run stops and renames nothing.
    """
    damaged = []
    for step in reversed(self.all_steps()):
      self.check_fits(step, abstract_state)
      state, data_state, error = self._try_restore(step, abstract_state, log)
      where = os.path.join(self.directory, str(step))
      ok_here = error is None
      ok_somewhere = multihost.any_process(ok_here)
      failed_somewhere = multihost.any_process(not ok_here)
      if ok_here and not failed_somewhere:
        self.set_aside(damaged, log)
        return step, state, data_state
      if ok_somewhere:
        raise CheckpointUnreadable(
            f"{where} is readable on some processes and not on others "
            f"({type(error).__name__ if error else 'elsewhere'}); nothing "
            "was renamed. Check the storage every process sees.")
      if isinstance(error, OSError) and not isinstance(
          error, FileNotFoundError):
        raise CheckpointUnreadable(
            f"{where} cannot be read ({type(error).__name__}: "
            f"{str(error)[:200]}); nothing was renamed. Fix the storage and "
            "run the same command again.")
      log(f"Checkpoint {where} is unreadable ({type(error).__name__}: "
          f"{str(error)[:200]}); trying the previous one.")
      damaged.append(step)
    self.set_aside(damaged, log)
    return None

  def set_aside(self, steps: Sequence[int], log=logging.warning) -> None:
    """Renames the checkpoints of `steps` to `<step>.corrupt-<time>`.

    Orbax no longer lists them (so their steps can be saved again and the
    keep-N rotation ignores them); their files are kept for inspection.
    """
    if not steps:
      return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if jax.process_index() == 0:
      for step in steps:
        path = os.path.join(self.directory, str(step))
        target = f"{path}.corrupt-{stamp}"
        suffix = 1
        while os.path.exists(target):
          target = f"{path}.corrupt-{stamp}-{suffix}"
          suffix += 1
        os.rename(path, target)
        log(f"Moved the unreadable checkpoint {path} aside to {target}; "
            "its step will be trained and saved again.")
    if jax.process_count() > 1:
      # pylint: disable-next=import-outside-toplevel
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("maskgit_checkpoint_set_aside")
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _one_copy(state: Any) -> Any:
  """In a one-process run, each array replicated over several devices as its
  first device's copy (the same values; restores take their shardings from
  the target). Orbax would otherwise split the writing of each replicated
  array between the local replicas, one compiled slice per array shape at
  a run's first save (1.8 s of the demo's stage-1 step 1,000 on a 2-core
  CPU), which buys nothing within one process."""
  if jax.process_count() > 1:
    return state

  def leaf(x):
    if (isinstance(x, jax.Array) and len(x.sharding.device_set) > 1
        and x.sharding.is_fully_replicated):
      return x.addressable_shards[0].data
    return x
  return jax.tree.map(leaf, state)


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for a sharded restore."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract_state, shardings)


@contextlib.contextmanager
def quiet_orbax():
  """Silences orbax's absl warnings about read-only options and items that
  are not restored (the train state's data-iterator item)."""
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


@contextlib.contextmanager
def read_only_manager(checkpoint_dir: str, **kwargs):
  """A read-only orbax CheckpointManager for this process alone: with several
  processes, any subset of them (e.g. process 0 only) may read."""
  me = jax.process_index()
  with quiet_orbax():
    manager = ocp.CheckpointManager(
        os.path.abspath(checkpoint_dir),
        options=ocp.CheckpointManagerOptions(
            read_only=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me},
                barrier_sync_key_prefix=f"read_only_{me}")), **kwargs)
  try:
    yield manager
  finally:
    manager.close()


def _single_device_target(metadata, device):
  """Abstract arrays on one device for every array leaf of orbax metadata."""
  sharding = jax.sharding.SingleDeviceSharding(device)

  def leaf(m):
    if hasattr(m, "shape") and hasattr(m, "dtype"):
      return jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding)
    return m
  return jax.tree.map(leaf, metadata)


def restore_params_with_info(checkpoint_dir: str, prefer_ema: bool = True,
                              step: Optional[int] = None
                              ) -> Tuple[Optional[Dict[str, Any]],
                                         Dict[str, Any]]:
  """Params of the newest readable checkpoint (or of `step`), on any device
  topology.

  The arrays are restored onto one local device from the checkpoint's
  metadata, so a checkpoint written on 8
  devices (or a TPU pod slice) reads on a 1-device CPU; also says which step
  and which params it used.

  Args:
    checkpoint_dir: WORKDIR/<stage>/checkpoints.
    prefer_ema: use `ema_params` when the checkpoint has them.
    step: this step's checkpoint and no other (None: the newest readable).

  Returns:
    (`{"params": numpy tree}` or None when there is no checkpoint,
     {"step", "params": "ema" | "params", "unreadable": [steps]}).

  Raises:
    ValueError: checkpoints exist but none is readable; `step` is not among
      them or is unreadable.
  """
  if not os.path.isdir(checkpoint_dir):
    if step is not None:
      raise ValueError(f"no checkpoint of step {step}: {checkpoint_dir} does "
                       "not exist")
    return None, {}
  unreadable, errors = [], []
  with read_only_manager(
      checkpoint_dir,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": ocp.JsonCheckpointHandler()}) as manager:
    steps = sorted(manager.all_steps(), reverse=True)
    if step is not None:
      if step not in steps:
        raise ValueError(f"no checkpoint of step {step} in {checkpoint_dir} "
                         f"(steps: {sorted(int(s) for s in steps)})")
      steps = [step]
    if not steps:
      return None, {}
    for candidate in steps:
      try:
        with quiet_orbax():
          metadata = manager.item_metadata(candidate)["state"]
          target = _single_device_target(metadata, jax.local_devices()[0])
          state = manager.restore(candidate, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target)))["state"]
          where = os.path.join(checkpoint_dir, str(candidate))
          if os.path.isdir(os.path.join(where, "data")):
            blob = manager.restore(candidate, args=ocp.args.Composite(
                data=ocp.args.JsonRestore()))["data"]
            verify_fingerprints(blob, state, where)
      except Exception as e:  # pylint: disable=broad-except
        unreadable.append(int(candidate))
        errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                      if str(e) else type(e).__name__)
        logging.warning("checkpoint %s/%s is unreadable (%s); trying the "
                        "previous one", checkpoint_dir, candidate, errors[-1])
        continue
      ema = state.get("ema_params") if prefer_ema else None
      params = ema if ema is not None else state["params"]
      return {"params": jax.device_get(params)}, {
          "step": int(candidate),
          "params": "ema" if ema is not None else "params",
          "unreadable": unreadable}
  if step is not None:  # the one step asked for
    raise ValueError(f"checkpoint {checkpoint_dir}/{step} is unreadable "
                     f"({errors[0]})")
  raise ValueError(f"no readable checkpoint in {checkpoint_dir} (steps "
                   f"{unreadable}; newest: {errors[0]})")


