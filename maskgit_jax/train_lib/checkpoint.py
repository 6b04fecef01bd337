"""Checkpoints: orbax CheckpointManager, asynchronous, keep N, resume.

Each checkpoint holds the train state (model, optimizer, EMA, RNG, step, and
any stage-specific state) and the data iterator's state, saved together so a
resumed run sees exactly the batches an uninterrupted run would have seen.
A checkpoint that cannot be read is skipped with a warning naming it, and the
previous one is used; nothing is deleted.
"""

import base64
import logging
import os
from typing import Any, Optional, Tuple

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
