"""Fitting a new run into a wall-clock budget: `config.time_budget_s`.

A recipe's step counts were measured on one machine; on a machine half as
fast the same steps take twice as long (`make demo`'s recipe: 14 min 36 s on
one 2-core machine here, 19 min 51 s on another). With
`config.time_budget_s = T` (seconds from the start of the process; None, the
default: the counts as given) a new run scales its lengths to what fits in
T on the machine it runs on:

1. Before stage 1 trains, the config's stage-1 step (its first phase) and
   stage-2 step are compiled and timed on random images or tokens with
   throwaway states (`StepTimer`; the run's data and state are untouched).
   The rest is estimated from what was measured (`plan_factor`): the other
   programs' compiling as multiples of the measured ones, the token cache
   per record. One factor f, between `MIN_FACTOR` and `MAX_FACTOR`, scales
   every length (`scale_lengths`): stage 1's reconstruction and
   decoder-only phases (`num_steps`, `disc_start_step`,
   `decoder_finetune_steps`) and stage 2's `num_steps`, so that both stages
   keep the config's proportions on any model and data.
2. When stage 2 starts (after the token cache), its step is timed again
   (the program compiled before stage 1, on the real tokenizer and data)
   and its length set from the time actually left (`stage2_steps`): how
   fast stage 1 really went, and the machine's minute-to-minute noise
   until then, are absorbed by stage 2.

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
# Zen 2 and a Zen 3 AMD EPYC (docs/measured.md, 2026-12-07): compiling the
# decoder-only phase 0.65x stage 1's first compile (with its
# initialisation); the token cache about 0.011 stage-1 steps per record
# (two views).
DECODER_COMPILE = 0.7
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
    self.stage2_timer = None  # StepTimer, from plan_lengths

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
                recon: int, decoder: int, stage2: int = 0, records: int = 0,
                stage2_compile_s: float = 0.0,
                stage2_step_s: float = 0.0) -> float:
  """The factor that makes the run's estimated rest fit `seconds_left`,
  from the measured compile and step times of stage 1 and of stage 2
  (stage2 = 0: no stage 2)."""
  fixed = compile_s * (1 + (DECODER_COMPILE if decoder else 0))
  per_unit = (recon + decoder) * step_s
  if stage2:
    # Its real step's compile and the final grid; the token cache; its
    # timing again when it starts (the program compiled here, reused).
    fixed += (stage2_compile_s * (1 + GRID_COMPILES) +
              records * CACHE_PER_RECORD * step_s +
              (MEASURE_STEPS["transformer"] + 3) * stage2_step_s)
    per_unit += stage2 * stage2_step_s * IN_LOOP
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


class StepTimer:
  """Times `task`'s step in its phase at step 0 on a throwaway state and a
  fixed batch. The first `time` compiles; a later one (stage 2's, when it
  starts: the real tokenizer and batch, the same shapes) reuses the
  compiled program and measures only the steps."""

  def __init__(self, task, mesh, rules, rng: jax.Array):
    self._created = time.perf_counter()
    self.task, self.mesh, self.rng = task, mesh, rng
    abstract = jax.eval_shape(task.init, rng)
    shardings = sharding_lib.state_shardings(abstract, mesh, rules)
    self._init = jax.jit(lambda r: nn.meta.unbox(task.init(r)),
                         out_shardings=shardings)
    self._step = jax.jit(task.train_step, donate_argnums=0,
                         out_shardings=(shardings, None),
                         static_argnums=() if task.phase is None else (3,))
    self.compile_s = None  # the first `time`'s

  def time(self, host_batch: Dict[str, np.ndarray], frozen: Any,
           steps: int) -> Tuple[float, float]:
    """(seconds to initialise, compile on the first call, and run one step;
    seconds per step: the steps after the first three, dispatched back to
    back). `frozen`: the step's frozen variables."""
    task, mesh = self.task, self.mesh
    start = self._created if self.compile_s is None else time.perf_counter()
    sharding = data_lib.make_data_sharding(mesh, sharding_lib.BATCH_AXES)
    batch = data_lib.to_global_array(
        {k: host_batch[k] for k in task.batch_keys}, sharding)
    frozen = jax.device_put(frozen, sharding_lib.replicated(mesh))
    extra = () if task.phase is None else (task.phase(0),)
    with sharding_lib.mesh_context(mesh):
      state = self._init(self.rng)
      state, metrics = self._step(state, batch, frozen, *extra)
      jax.block_until_ready(metrics)
      first_s = time.perf_counter() - start
      for _ in range(2):
        state, metrics = self._step(state, batch, frozen, *extra)
      jax.block_until_ready(metrics)
      begin = time.perf_counter()
      for _ in range(steps):
        state, metrics = self._step(state, batch, frozen, *extra)
      jax.block_until_ready((state, metrics))
    per_step = (time.perf_counter() - begin) / steps
    del state
    if self.compile_s is None:
      self.compile_s = first_s
    return first_s, per_step


def random_batch(keys, batch_size: int, image_shape, seed: int = 0,
                 codebook_size: int = 1, num_tokens: int = 0
                 ) -> Dict[str, np.ndarray]:
  """A host batch for timing a step: zero labels, random images
  `[b, *image_shape]` and random token ids `[b, num_tokens]` (those of
  `keys`)."""
  rs = np.random.RandomState(seed)
  out = {"label": np.zeros((batch_size,), np.int32)}
  if "image" in keys:
    out["image"] = rs.rand(batch_size, *image_shape).astype(np.float32)
  if "tokens" in keys:
    out["tokens"] = rs.randint(0, codebook_size, (batch_size, num_tokens),
                               dtype=np.int32)
  return out


def adopt_recorded(config: ml_collections.ConfigDict, workdir: str,
                   note: Callable[[str], Any] = print
                   ) -> ml_collections.ConfigDict:
  """A resumed run whose lengths were planned (its config.json records a
  budget): those lengths and that budget, whatever this command's config
  or budget says, so that resuming changes none of them (`make demo`'s
  budget is the time left after its set-up, another number each time).
  Otherwise `config` unchanged. `note` gets one line naming the lengths
  kept where this command's config gives others."""
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
  kept = []
  for section, keys in (("tokenizer_training",
                         ("num_steps", "disc_start_step",
                          "decoder_finetune_steps")),
                        ("transformer_training", ("num_steps",))):
    recorded = old.get(section, {})
    for key in keys:
      if key in recorded and key in out[section]:
        if out[section][key] != recorded[key]:
          kept.append(f"{section}.{key}={recorded[key]} (this command: "
                      f"{out[section][key]})")
        out[section][key] = recorded[key]
  if kept:
    note(f"time budget: {workdir} keeps the lengths its first run planned: "
         f"{', '.join(kept)}; train into a new --workdir for others")
  return out


def set_stage2(config: ml_collections.ConfigDict, steps: int
               ) -> ml_collections.ConfigDict:
  out = copy.deepcopy(config)
  out.transformer_training.num_steps = int(steps)
  return out


def _zero_tokenizer(stage1_task, rng):
  """Frozen variables for timing the stage-2 step before stage 1 has
  trained: a zero tokenizer of stage 1's shapes (the same programs' cost
  as the trained one)."""
  abstract = nn.meta.unbox(jax.eval_shape(stage1_task.init, rng))
  return {"params": jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                                 abstract.params)}


def plan_lengths(config, budget: Budget, task, image_shape, records: int,
                 mesh, rules, rng, workdir: str, log, stage2=None):
  """Before stage 1: its step timed (`task`, the config's lengths) and, with
  `stage2` = (stage-2 task, its rng, token ids per example, codebook size),
  stage 2's; every length scaled to fit the budget and the plan recorded in
  config.json. `records`: stage 2's training records. The stage-2 timer is
  kept in `budget` for stage 2's start."""
  section = config.tokenizer_training
  batch = random_batch(task.batch_keys,
                       section.batch_size // jax.process_count(),
                       image_shape)
  timer = StepTimer(task, mesh, rules, rng)
  compile_s, step_s = timer.time(batch, task.frozen,
                                 MEASURE_STEPS["tokenizer"])
  recon, decoder = stage1_lengths(section)
  times = f"stage-1 step {1e3 * step_s:.1f} ms, first compile {compile_s:.1f} s"
  steps2, compile2, step2 = 0, 0.0, 0.0
  if stage2 is not None:  # None without stage 2 (run._stage2_for_timing)
    task2, rng2, num_tokens, codebook_size = stage2
    frozen = _zero_tokenizer(task, rng2)
    budget.stage2_timer = StepTimer(task2, mesh, rules, rng2)
    batch2 = random_batch(
        task2.batch_keys,
        config.transformer_training.batch_size // jax.process_count(),
        image_shape, codebook_size=codebook_size, num_tokens=num_tokens)
    compile2, step2 = budget.stage2_timer.time(
        batch2, frozen, MEASURE_STEPS["transformer"])
    steps2 = config.transformer_training.num_steps
    times += f"; stage-2 step {1e3 * step2:.1f} ms, compile {compile2:.1f} s"
  if not config.transformer_training.get("token_cache", False):
    records = 0
  left = budget.left()
  factor = plan_factor(seconds_left=left, compile_s=compile_s,
                       step_s=step_s, recon=recon, decoder=decoder,
                       stage2=steps2, records=records,
                       stage2_compile_s=compile2, stage2_step_s=step2)
  planned = scale_lengths(config, factor)
  return _recorded(planned, workdir, log, (
      f"{times}; {left:.0f} s left -> {factor:.2f}x the config's lengths: "
      f"{describe(planned)} (config: {describe(config)})"))


def plan_stage2(config, budget: Budget, task, image_shape, batches, mesh,
                rules, rng, workdir: str, log):
  """When stage 2 starts: its step timed (on the token cache's first batch,
  no iterator moved, or random images; the program compiled before stage
  1 where `plan_lengths` timed it), its length set from the time left and
  recorded in config.json. Returns (config, stop_by): the time after which
  stage 2 stops where it is, should the machine slow down (the final
  grid's time kept back)."""
  section = config.transformer_training
  local = section.batch_size // jax.process_count()
  if batches is not None:
    batch = {k: v[:local] for k, v in batches.batch(0).items()}
  else:
    batch = random_batch(task.batch_keys, local, image_shape)
  timer = budget.stage2_timer or StepTimer(task, mesh, rules, rng)
  _, step_s = timer.time(batch, task.frozen, MEASURE_STEPS["transformer"])
  compile_s = timer.compile_s
  budget.stage2_timer = None  # its compiled programs are not needed again
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
