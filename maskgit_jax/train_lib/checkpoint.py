"""Checkpoints: orbax CheckpointManager, asynchronous, keep N, resume.

Each checkpoint holds the train state (model, optimizer, EMA, RNG, step, and
any stage-specific state) and the data iterator's state, saved together so a
resumed run sees exactly the batches an uninterrupted run would have seen.
A checkpoint that cannot be read is skipped with a warning naming it, and the
previous one is used; nothing is deleted.
"""

import base64
import contextlib
import logging
import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp


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
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(_encode_data_state(data_state))),
        force=force)

  def restore(self, step: int, abstract_state: Any) -> Tuple[Any, Any]:
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
    return restored["state"], _decode_data_state(restored["data"])

  def restore_latest(self, abstract_state: Any,
                     log=logging.warning) -> Optional[Tuple[int, Any, Any]]:
    """The newest readable checkpoint as `(step, state, data_state)`, or None."""
    for step in reversed(self.all_steps()):
      try:
        state, data_state = self.restore(step, abstract_state)
        return step, state, data_state
      except Exception as e:  # pylint: disable=broad-except
        log(f"Checkpoint {os.path.join(self.directory, str(step))} is "
            f"unreadable ({type(e).__name__}: {str(e)[:200]}); trying the "
            "previous one.")
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


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


def restore_params_with_info(checkpoint_dir: str, prefer_ema: bool = True
                              ) -> Tuple[Optional[Dict[str, Any]],
                                         Dict[str, Any]]:
  """Params of the newest readable checkpoint, on any device topology.

  The arrays are restored onto one local device from the checkpoint's
  metadata, so a checkpoint written on 8
  devices (or a TPU pod slice) reads on a 1-device CPU; also says which step
  and which params it used.

  Args:
    checkpoint_dir: WORKDIR/<stage>/checkpoints.
    prefer_ema: use `ema_params` when the checkpoint has them.

  Returns:
    (`{"params": numpy tree}` or None when there is no checkpoint,
     {"step", "params": "ema" | "params", "unreadable": [steps]}).

  Raises:
    ValueError: checkpoints exist but none is readable.
  """
  if not os.path.isdir(checkpoint_dir):
    return None, {}
  unreadable, errors = [], []
  with read_only_manager(
      checkpoint_dir,
      item_handlers={"state": ocp.StandardCheckpointHandler()}) as manager:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      return None, {}
    for step in steps:
      try:
        with quiet_orbax():
          metadata = manager.item_metadata(step)["state"]
          target = _single_device_target(metadata, jax.local_devices()[0])
          state = manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target)))["state"]
      except Exception as e:  # pylint: disable=broad-except
        unreadable.append(int(step))
        errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                      if str(e) else type(e).__name__)
        logging.warning("checkpoint %s/%s is unreadable (%s); trying the "
                        "previous one", checkpoint_dir, step, errors[-1])
        continue
      ema = state.get("ema_params") if prefer_ema else None
      params = ema if ema is not None else state["params"]
      return {"params": jax.device_get(params)}, {
          "step": int(step), "params": "ema" if ema is not None else "params",
          "unreadable": unreadable}
  raise ValueError(f"no readable checkpoint in {checkpoint_dir} (steps "
                   f"{unreadable}; newest: {errors[0]})")


