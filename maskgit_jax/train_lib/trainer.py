"""The training loop shared by both stages.

A stage is a `Task`: it creates its `TrainState` and defines one jit-able
`train_step(state, batch, frozen) -> (state, metrics)`. `run_task` does the
rest the same way for both: sharded state creation (`jax.eval_shape` ->
shardings -> `jax.jit(init, out_shardings=...)`), automatic resume from the
newest readable checkpoint, a jitted step with the state donated, logging,
image grids, periodic and final checkpoints, SIGTERM (preemption) handling and
a stop on a non-finite loss that names the step and saves nothing broken.
"""

import dataclasses
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from clu import parameter_overview
import flax
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from maskgit_jax.common import files
from maskgit_jax.common import multihost
from maskgit_jax.store import checkpoint as checkpoint_lib
from maskgit_jax.train_lib import logger as logger_lib
from maskgit_jax.train_lib import periodic
from maskgit_jax.train_lib import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
  """The state of either stage.

  step: int32 scalar. params: trainable parameters. opt_state: optimizer
  state. rng: PRNG key (uint32[2]). ema_params: EMA of params (or None).
  aux: stage-specific state (stage 1: discriminator params and optimizer,
  LeCAM averages, code usage), or None.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = None
  aux: Any = None


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf."""


class Preempted(Exception):
  """SIGTERM arrived; the state was saved."""


@dataclasses.dataclass
class Task:
  """One training stage.

  name: stage name (subfolder of the workdir).
  num_steps: total steps.
  init: `rng -> TrainState` (parameters may be logically boxed).
  train_step: `(state, batch, frozen) -> (state, metrics)`; metrics is a
    dict of float32 scalars with a "loss".
  frozen: extra read-only arrays passed to every step (e.g. the tokenizer's
    variables in stage 2), replicated.
  images: optional `(params, host_batch, frozen) -> {name: (grid,
    row_labels)}` called every `image_every` steps on process 0 only, with
    the parameters (the EMA when there is one) as host-local arrays, this
    process's numpy batch and `frozen` as given here.
  batch_keys: batch entries the step uses.
  phase: optional `step -> hashable` (e.g. a tuple of bools): the loop then
    calls `train_step(state, batch, frozen, phase(step))` with the phase a
    static argument, one compiled step per phase, so a stage whose steps
    change what they compute (stage 1's GAN start, its decoder-only phase)
    needs no `lax.cond` inside the step.
  """
  name: str
  num_steps: int
  init: Callable[[jax.Array], TrainState]
  train_step: Callable[..., Any]
  frozen: Any = None
  images: Optional[Callable[..., Dict[str, Any]]] = None
  batch_keys: tuple = ("image", "label")
  phase: Optional[Callable[[int], Any]] = None


@dataclasses.dataclass
class Hook:
  """Something the loop runs every `every` steps and at the last step, e.g.
  an evaluator (`maskgit_jax.evaluation.evaluators`); train_lib never imports
  what the hooks do.

  name: the prefix of its scalars in metrics.jsonl and TensorBoard.
  every: steps between calls (0: only at the stage's last step).
  fn: `(step, variables) -> {name: float} | None`, called on process 0 only
    with `{"params": ...}` (the EMA when there is one) as host numpy arrays;
    the other processes wait for it on the key-value barrier (no device
    collective times out however long it takes).
  """
  name: str
  every: int
  fn: Callable[[int, Any], Optional[Dict[str, float]]]


class SigtermFlag:
  """Sets `.raised` on SIGTERM (main thread only), restores the old handler.

  `train_and_evaluate` holds one for the whole run, so that a SIGTERM
  between stages is acted on at the next stage's first step.
  """

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _write_parameter_overview(params, workdir: str, logger) -> None:
  """WORKDIR/<stage>/parameters.txt: clu's table of every parameter (name,
  shape, dtype, size), written at start-up; the total goes to the log."""
  if not multihost.is_primary():
    return
  table = parameter_overview.get_parameter_overview(params,
                                                     include_stats=False)
  files.write_text(os.path.join(workdir, "parameters.txt"), table + "\n")
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  logger.note(f"{total:,} parameters (table: parameters.txt)")


def _check_finite(pending, logger):
  """Fetches pending metrics; raises NonFiniteLossError at the first bad step."""
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), values in zip(pending, fetched):
    loss = float(values["loss"])
    if not np.isfinite(loss):
      logger.note(f"loss is {loss} at step {step}; stopping without saving.")
      raise NonFiniteLossError(
          f"Training stage '{logger.stage}' stopped: the loss is {loss} at "
          f"step {step}. No checkpoint of this state was written; the last "
          "good checkpoint (if any) is kept.")
  return fetched


def _host_params(state):
  """The parameters (EMA when kept) as host arrays; a collective with
  several processes, so every process calls it."""
  params = state.ema_params if state.ema_params is not None else state.params
  if jax.process_count() > 1:
    return multihost.to_host(params)
  return params


def _write_images(task, state, host_batch, logger, step):
  """Runs `task.images` on process 0 with host-local parameters; the other
  processes wait for it on the key-value barrier."""
  params = _host_params(state)
  if multihost.is_primary():
    for name, (grid, labels) in task.images(params, host_batch,
                                            task.frozen).items():
      logger.images(step, name, grid, labels)
  multihost.wait_for_all(f"{task.name}_images_{step}")


def run_hooks(hooks, state, step: int, last_step: int, logger,
              stage: str) -> None:
  """Runs the hooks due at `step` on process 0 (the others wait) and logs
  their scalars as `<hook name>/<key>`."""
  due = [h for h in hooks if periodic.is_time(step, h.every, last_step)]
  if not due:
    return
  params = jax.device_get(_host_params(state))
  for hook in due:
    if multihost.is_primary():
      scalars = hook.fn(step, {"params": params})
      if scalars:
        logger.scalars(step, {f"{hook.name}/{k}": float(v)
                              for k, v in scalars.items() if v is not None})
    multihost.wait_for_all(f"{stage}_{hook.name}_{step}")


def run_task(task: Task, *, mesh, rules, workdir: str, batches: Iterator,
             to_global: Callable[[Dict[str, np.ndarray]], Dict[str, jax.Array]],
             config: ml_collections.ConfigDict, rng: jax.Array,
             sigterm: Optional[SigtermFlag] = None,
             hooks: Sequence[Hook] = (),
             stop_by: Optional[float] = None) -> TrainState:
  """Trains `task` to `task.num_steps`, resuming from `workdir/checkpoints`.

  Args:
    task: the stage.
    mesh, rules: device mesh and logical axis rules.
    workdir: the stage's folder.
    batches: an iterator of host batches with `get_state()`/`set_state()`.
    to_global: host batch -> global jax.Arrays on the mesh.
    config: the stage's config section (`log_every`, `checkpoint_every`,
      `image_every`, `keep_checkpoints`, `async_checkpoints`).
    rng: the stage's base PRNG key.
    sigterm: a SIGTERM flag (default: one installed here).
    hooks: run every `hook.every` steps and at the last step (after that
      step's checkpoint); a stage found complete runs its last-step hooks
      (an evaluator that already reported that step returns at once).
    stop_by: a time.time() after which the stage stops at the step it has
      reached, saved, as if that were its last (a run's wall-clock budget,
      train_lib/time_budget.py; running again trains the rest).

  Returns:
    The final state. Raises `Preempted` after saving if SIGTERM arrived, and
    `NonFiniteLossError` if the loss became NaN/Inf.
  """
  abstract = jax.eval_shape(task.init, rng)
  shardings = sharding_lib.state_shardings(abstract, mesh, rules)
  abstract = nn.meta.unbox(abstract)
  logger = logger_lib.Logger(workdir, task.name, task.num_steps,
                             tensorboard=config.get("tensorboard", True))
  _write_parameter_overview(abstract.params, workdir, logger)
  ckpt = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints,
      async_save=config.async_checkpoints)
  try:
    restored = ckpt.restore_latest(
        checkpoint_lib.abstract_with_shardings(abstract, shardings),
        log=logger.note)
    if restored is not None:
      step, state, data_state = restored
      if data_state is not None:
        batches.set_state(data_state)
      logger.note(f"resumed from step {step}")
    else:
      init = jax.jit(lambda r: nn.meta.unbox(task.init(r)),
                     out_shardings=shardings)
      state = init(rng)
      step = 0
    if step >= task.num_steps:
      logger.note(f"already trained ({step} steps)")
      run_hooks(hooks, state, step, step, logger, task.name)
      return state

    train_step = jax.jit(
        task.train_step, donate_argnums=0, out_shardings=(shardings, None),
        static_argnums=() if task.phase is None else (3,))
    phase_args = ((lambda s: ()) if task.phase is None else
                  (lambda s: (task.phase(s),)))
    frozen = jax.device_put(task.frozen, sharding_lib.replicated(mesh))
    log_every = periodic.to_steps(config.log_every, name="log_every")
    ckpt_every = periodic.to_steps(config.checkpoint_every,
                                   name="checkpoint_every")
    image_every = periodic.to_steps(config.get("image_every", 0),
                                    name="image_every")
    pending = []
    # With several processes a SIGTERM may reach them at different steps;
    # they agree (a collective) at each log or checkpoint step to stop
    # together. One process acts on it at the next step.
    multi = jax.process_count() > 1
    own_flag = sigterm is None
    flag_ctx = SigtermFlag() if own_flag else None
    sigterm = flag_ctx.__enter__() if own_flag else sigterm
    logger.start(step)
    try:
      while step < task.num_steps:
        host_batch = next(batches)
        batch = to_global({k: host_batch[k] for k in task.batch_keys})
        # The mesh is in scope for the step only: the pictures sample on
        # process 0 alone, outside it.
        with sharding_lib.mesh_context(mesh):
          state, metrics = train_step(state, batch, frozen,
                                      *phase_args(step))
        step += 1
        pending.append((step, metrics))
        out_of_time = False
        if stop_by is not None and step < task.num_steps and step % 10 == 0:
          # Dispatch runs ahead of the device: the time of a finished step.
          jax.block_until_ready(metrics)
          out_of_time = time.time() >= stop_by
        save_now = (periodic.is_time(step, ckpt_every, task.num_steps) or
                    out_of_time)
        log_now = (periodic.is_time(step, log_every, task.num_steps) or
                   out_of_time)
        if multi:
          stop = (multihost.any_process(sigterm.raised)
                  if log_now or save_now else False)
        else:
          stop = sigterm.raised
        if log_now or save_now or stop:
          fetched = _check_finite(pending, logger)
          mean = {k: float(np.mean([f[k] for f in fetched]))
                  for k in fetched[-1]}
          logger.scalars(step, mean)
          pending = []
        if task.images is not None and periodic.is_time(
            step, image_every, task.num_steps):
          _write_images(task, state, host_batch, logger, step)
        if save_now or stop:
          if pending:
            _check_finite(pending, logger)
            pending = []
          ckpt.save(step, state, batches.get_state())
        if hooks and not stop:
          run_hooks(hooks, state, step, task.num_steps, logger, task.name)
        if stop:
          ckpt.wait()
          logger.note(f"SIGTERM: saved step {step}, exiting.")
          raise Preempted(f"preempted at step {step}")
        if out_of_time:
          logger.note(f"time budget: stopped at step {step} of "
                      f"{task.num_steps} (saved); the same command trains "
                      "the rest.")
          break
    finally:
      if own_flag:
        flag_ctx.__exit__(None, None, None)
    return state
  finally:
    ckpt.close()
    logger.close()
