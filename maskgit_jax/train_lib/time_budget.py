"""Fitting a new run into a wall-clock budget: `config.time_budget_s`.

A recipe's step counts were measured on one machine; on a machine half as
fast the same steps take twice as long (`make demo`'s recipe: 14 min 36 s on
one 2-core machine here, 19 min 51 s on another). With
`config.time_budget_s = T` (seconds from the start of the process; None, the
default: the counts as given) a new run scales its lengths to what fits in
T on the machine it runs on:

1. Before stage 1 trains, the config's stage-1 step (its first phase) is
   compiled and timed on random images with a throwaway state (`measure`;
   the run's data and state are untouched). The rest is estimated from what
   was measured (`plan_factor`): a stage-2 step as `STAGE2_STEP` stage-1
   steps, the other programs' compiling as multiples of stage 1's, the token
   cache per record. One factor f, between `MIN_FACTOR` and `MAX_FACTOR`,
   scales every length (`scale_lengths`): stage 1's reconstruction and
   decoder-only phases (`num_steps`, `disc_start_step`,
   `decoder_finetune_steps`) and stage 2's `num_steps`.
2. When stage 2 starts (after the token cache), its step is compiled and
   timed the same way and its length set from the time actually left
   (`stage2_steps`): how fast stage 1 really went, and the machine's
   minute-to-minute noise until then, are absorbed by stage 2.

`config.json` is rewritten with each plan before the stage it sets trains,
so `sample`, `evaluate` and a resume read the lengths that trained. The
budget is planned once, by the process that starts the run: a resumed run
keeps its recorded lengths (`adopt_recorded`). Single-process runs only
(the measurement is one process's). Not modelled: evaluators in the
training loop (`config.evaluation`), a perceptual feature network's
training, the time before the process starts (`make demo`'s set-up; its
budget leaves room for it).
"""

import copy
import json
import os
import time
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from maskgit_jax import data as data_lib
from maskgit_jax.common import checks
from maskgit_jax.train_lib import config_record
from maskgit_jax.train_lib import sharding as sharding_lib

KEY = "config.time_budget_s"
MIN_FACTOR = 0.2
MAX_FACTOR = 3.0
# From the embedded default's runs (configs/fashion_mnist.py) on a 2-core
# Zen 2 and a Zen 3 AMD EPYC (docs/measured.md, 2026-12-07): a stage-2 step
# costs 2.6-3.0 stage-1 steps;
# compiling the decoder-only phase 0.65x stage 1's first compile (with its
# initialisation), stage 2's step and its final grid each about 0.4x-0.45x;
# the token cache about 0.011 stage-1 steps per record (two views).
STAGE2_STEP = 3.0
DECODER_COMPILE = 0.7
STAGE2_COMPILES = 1.4  # its throwaway measurement, its step, the grid
CACHE_PER_RECORD = 0.012
# Stage 2 in the loop (logging, checkpoints, periodic grids) against its
# step timed alone, and the time kept back at the end for the final grid
# (in units of stage 2's measured compile time).
IN_LOOP = 1.05
GRID_COMPILES = 1.3
MEASURE_STEPS = {"tokenizer": 30, "transformer": 10}
ROUND = 10  # lengths are multiples of this


def process_start_time() -> float:
  """When this process started (time.time() scale; Linux /proc), else now."""
  try:
    with open("/proc/self/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    ticks = float(fields[19])  # starttime, field 22 of stat(5)
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return time.time()


def check(config: ml_collections.ConfigDict) -> None:
  """`config.time_budget_s`: None or seconds > 0, with step counts to scale
  (not durations in epochs). One line naming the key. (One process:
  `Budget` checks it, when the run starts.)"""
  value = config.get("time_budget_s")
  if value is None:
    return
  checks.check_number(KEY, value, 0, open_low=True, note="None: off")
  for name in ("tokenizer_training", "transformer_training"):
    steps = config[name].num_steps
    if not checks.is_int(steps, 1):
      raise ValueError(
          f"{KEY}={value:g} scales step counts, but {name}.num_steps="
          f"{steps!r} is not one: give the steps, or {KEY}=None.")


class Budget:
  """The deadline of a run whose lengths this process plans, and the
  config's own stage-2 length (what MIN_FACTOR and MAX_FACTOR bound)."""

  def __init__(self, seconds: float, started: float, stage2_steps: int,
               clock: Callable[[], float] = time.time):
    if jax.process_count() > 1:
      raise ValueError(
          f"{KEY}={seconds:g} plans a one-process run from its own timing; "
          f"this run has {jax.process_count()} processes: set {KEY}=None.")
    self.deadline = started + float(seconds)
    self.stage2_steps = int(stage2_steps)
    self.clock = clock

  def left(self) -> float:
    return self.deadline - self.clock()


def _rounded(x: float) -> int:
  return max(ROUND, int(round(x / ROUND)) * ROUND)


def stage1_lengths(t: ml_collections.ConfigDict) -> Tuple[int, int]:
  """(reconstruction steps, decoder-only steps) of a tokenizer section."""
  decoder = int(t.get("decoder_finetune_steps") or 0)
  decoder = decoder if decoder < t.num_steps else 0
  return t.num_steps - decoder, decoder


def scale_lengths(config: ml_collections.ConfigDict, factor: float
                  ) -> ml_collections.ConfigDict:
  """A copy with every stage length times `factor` (multiples of ROUND):
  the phases keep their order and their boundaries move with them."""
  out = copy.deepcopy(config)
  t = out.tokenizer_training
  recon, decoder = stage1_lengths(t)
  new_recon = _rounded(factor * recon)
  new_decoder = _rounded(factor * decoder) if decoder else 0
  start = int(t.get("disc_start_step") or 0)
  if start == recon:  # the GAN starts with the decoder-only phase
    new_start = new_recon
  else:
    new_start = min(int(round(factor * start)), new_recon + new_decoder)
  t.num_steps = new_recon + new_decoder
  if decoder:
    t.decoder_finetune_steps = new_decoder
  if "disc_start_step" in t and t.disc_start_step is not None:
    t.disc_start_step = new_start
  m = out.transformer_training
  m.num_steps = _rounded(factor * m.num_steps)
  return out


def plan_factor(*, seconds_left: float, compile_s: float, step_s: float,
                recon: int, decoder: int, stage2: int, records: int) -> float:
  """The factor that makes the run's estimated rest fit `seconds_left`,
  from stage 1's measured compile and step times (stage2 = 0: no stage 2)."""
  fixed = compile_s * (1 + (DECODER_COMPILE if decoder else 0))
  if stage2:
    fixed += compile_s * STAGE2_COMPILES + (
        records * CACHE_PER_RECORD + MEASURE_STEPS["transformer"]) * step_s
  per_unit = (recon + decoder + STAGE2_STEP * stage2) * step_s
  factor = (seconds_left - fixed) / per_unit
  return float(np.clip(factor, MIN_FACTOR, MAX_FACTOR))


def stage2_steps(*, seconds_left: float, compile_s: float, step_s: float,
                 nominal: int) -> int:
  """Stage 2's length for the time left, from its measured compile and step
  times: the real step's compile and the final grid kept back."""
  usable = seconds_left - compile_s * (1 + GRID_COMPILES)
  steps = usable / (step_s * IN_LOOP)
  return _rounded(float(np.clip(steps, MIN_FACTOR * nominal,
                                MAX_FACTOR * nominal)))


def measure(task, mesh, rules, host_batch: Dict[str, np.ndarray],
            to_global: Callable[[Dict[str, np.ndarray]], Any],
            rng: jax.Array, steps: int) -> Tuple[float, float]:
  """(seconds to initialise and compile plus one step, seconds per step) of
  `task`'s step in its phase at step 0, on a throwaway state and a fixed
  batch (the steps after the first two, dispatched back to back)."""
  start = time.perf_counter()
  abstract = jax.eval_shape(task.init, rng)
  shardings = sharding_lib.state_shardings(abstract, mesh, rules)
  state = jax.jit(lambda r: nn.meta.unbox(task.init(r)),
                  out_shardings=shardings)(rng)
  step = jax.jit(task.train_step, donate_argnums=0,
                 out_shardings=(shardings, None),
                 static_argnums=() if task.phase is None else (3,))
  extra = () if task.phase is None else (task.phase(0),)
  frozen = jax.device_put(task.frozen, sharding_lib.replicated(mesh))
  batch = to_global({k: host_batch[k] for k in task.batch_keys})
  with sharding_lib.mesh_context(mesh):
    state, metrics = step(state, batch, frozen, *extra)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for _ in range(2):
      state, metrics = step(state, batch, frozen, *extra)
    jax.block_until_ready(metrics)
    begin = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, batch, frozen, *extra)
    jax.block_until_ready((state, metrics))
  per_step = (time.perf_counter() - begin) / steps
  del state
  return compile_s, per_step


def random_batch(keys, batch_size: int, image_shape, seed: int = 0
                 ) -> Dict[str, np.ndarray]:
  """A host batch of random images (and zero labels) for timing a step that
  reads images; a token-cache step is timed on the cache's first batch."""
  rs = np.random.RandomState(seed)
  out = {"label": np.zeros((batch_size,), np.int32)}
  if "image" in keys:
    out["image"] = rs.rand(batch_size, *image_shape).astype(np.float32)
  return out


def adopt_recorded(config: ml_collections.ConfigDict, workdir: str
                   ) -> ml_collections.ConfigDict:
  """A resumed run whose lengths were planned (its config.json records a
  budget): those lengths and that budget, whatever this command's config
  or budget says, so that resuming changes none of them (`make demo`'s
  budget is the time left after its set-up, another number each time).
  Otherwise `config` unchanged."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError):
    return config  # config_record.record names the problem
  if not isinstance(old, dict) or old.get("time_budget_s") is None:
    return config
  out = copy.deepcopy(config)
  out.time_budget_s = float(old["time_budget_s"])  # spent on the plan
  for section, keys in (("tokenizer_training",
                         ("num_steps", "disc_start_step",
                          "decoder_finetune_steps")),
                        ("transformer_training", ("num_steps",))):
    recorded = old.get(section, {})
    for key in keys:
      if key in recorded and key in out[section]:
        out[section][key] = recorded[key]
  return out


def set_stage2(config: ml_collections.ConfigDict, steps: int
               ) -> ml_collections.ConfigDict:
  out = copy.deepcopy(config)
  out.transformer_training.num_steps = int(steps)
  return out


def _timed(task, mesh, rules, host_batch, rng):
  sharding = data_lib.make_data_sharding(mesh, sharding_lib.BATCH_AXES)
  return measure(task, mesh, rules, host_batch,
                 lambda b: data_lib.to_global_array(b, sharding), rng,
                 MEASURE_STEPS[task.name])


def plan_lengths(config, budget: Budget, task, image_shape, records: int,
                 mesh, rules, rng, workdir: str, log):
  """Before stage 1: its step timed (`task`, the config's lengths), every
  length scaled to fit the budget and the plan recorded in config.json.
  `records`: stage 2's training records (0 without stage 2)."""
  section = config.tokenizer_training
  batch = random_batch(task.batch_keys,
                       section.batch_size // jax.process_count(),
                       image_shape)
  compile_s, step_s = _timed(task, mesh, rules, batch, rng)
  recon, decoder = stage1_lengths(section)
  stage2 = (config.transformer_training.num_steps
            if "transformer" in config.stages else 0)
  if not config.transformer_training.get("token_cache", False):
    records = 0
  left = budget.left()
  factor = plan_factor(seconds_left=left, compile_s=compile_s,
                       step_s=step_s, recon=recon, decoder=decoder,
                       stage2=stage2, records=records)
  planned = scale_lengths(config, factor)
  return _recorded(planned, workdir, log, (
      f"stage-1 step {1e3 * step_s:.1f} ms, first compile {compile_s:.1f} s; "
      f"{left:.0f} s left -> {factor:.2f}x the config's lengths: "
      f"{describe(planned)} (config: {describe(config)})"))


def plan_stage2(config, budget: Budget, task, image_shape, batches, mesh,
                rules, rng, workdir: str, log):
  """When stage 2 starts: its step timed (on the token cache's first batch,
  no iterator moved, or random images), its length set from the time left
  and recorded in config.json. Returns (config, stop_by): the time after
  which stage 2 stops where it is, should the machine slow down (the final
  grid's time kept back)."""
  section = config.transformer_training
  local = section.batch_size // jax.process_count()
  if batches is not None:
    batch = {k: v[:local] for k, v in batches.batch(0).items()}
  else:
    batch = random_batch(task.batch_keys, local, image_shape)
  compile_s, step_s = _timed(task, mesh, rules, batch, rng)
  left = budget.left()
  steps = stage2_steps(seconds_left=left, compile_s=compile_s,
                       step_s=step_s, nominal=budget.stage2_steps)
  planned = _recorded(set_stage2(config, steps), workdir, log, (
      f"stage-2 step {1e3 * step_s:.1f} ms, compile {compile_s:.1f} s; "
      f"{left:.0f} s left -> stage 2 {steps} steps (planned before: "
      f"{section.num_steps})"))
  return planned, budget.deadline - GRID_COMPILES * compile_s


def _recorded(planned, workdir: str, log, what: str):
  """A plan logged and written to config.json before what it sets trains."""
  log(f"time budget ({KEY}={planned.time_budget_s:g}): {what}")
  config_record.rewrite(planned, workdir)
  return planned


def describe(config: ml_collections.ConfigDict) -> str:
  t, m = config.tokenizer_training, config.transformer_training
  recon, decoder = stage1_lengths(t)
  stage1 = f"{recon} + {decoder} decoder-only" if decoder else f"{recon}"
  return f"stage 1 {stage1} steps, stage 2 {m.num_steps} steps"
