"""`train_and_evaluate(config, workdir)`: both stages into one workdir.

Workdir layout:
  config.json                       the resolved config
  metrics.jsonl, tensorboard/       scalars of both stages
  images/                           reconstructions (stage 1), samples (stage 2)
  tokenizer/checkpoints/<step>/     stage-1 checkpoints (orbax)
  tokenizer/feature_net.msgpack     the perceptual loss's own network, if on
  transformer/checkpoints/<step>/   stage-2 checkpoints
  samples.png                       the final class-conditional grid
  data_index/                       cached folder indexes

Each stage resumes from its newest readable checkpoint and is skipped when it
is complete, so re-running the same command continues an interrupted run.
"""

import os
import time
from typing import Callable, Optional, Sequence

import jax
import ml_collections

from maskgit_jax import data as data_lib
from maskgit_jax.common import multihost
from maskgit_jax.common import precision
from maskgit_jax.data import token_cache
from maskgit_jax.generation import sample_lib
from maskgit_jax.libml import sampling
from maskgit_jax.nets import factory
from maskgit_jax.store import loader
from maskgit_jax.train_lib import auto_config
from maskgit_jax.train_lib import config_checks
from maskgit_jax.train_lib import config_record
from maskgit_jax.train_lib import feature_net_task
from maskgit_jax.train_lib import periodic
from maskgit_jax.train_lib import run_lock
from maskgit_jax.train_lib import sharding as sharding_lib
from maskgit_jax.train_lib import time_budget
from maskgit_jax.train_lib import tokenizer_task
from maskgit_jax.train_lib import trainer
from maskgit_jax.train_lib import transformer_task

HookFactory = Callable[..., Sequence[trainer.Hook]]


def _stage_rng(config, stage: str) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(config.seed),
                            loader.STAGES.index(stage))


def resolve_durations(section: ml_collections.ConfigDict,
                      steps_per_epoch: int, name: str
                      ) -> ml_collections.ConfigDict:
  """A copy of a stage section with every duration in steps (one place).

  An epoch is the input pipeline's: `steps_per_epoch` =
  `Dataset.steps_per_epoch` (examples // global batch), so "2 epochs" ends
  exactly where the pipeline's second epoch ends.
  """
  values = section.to_dict()
  for key in periodic.DURATION_KEYS:
    if key in values:
      values[key] = to_steps(values[key], steps_per_epoch,
                             values["batch_size"], f"{name}.{key}")
  if values["num_steps"] <= 0:
    raise ValueError(f"{name}.num_steps={section.num_steps} must be positive.")
  return ml_collections.ConfigDict(values)


def to_steps(value, steps_per_epoch: int, batch_size: int, name: str) -> int:
  """One duration (steps, "N epochs", "N examples") in steps."""
  return periodic.to_steps(value, steps_per_epoch=steps_per_epoch,
                           batch_size=batch_size, name=name)


def _hooks(make_hooks, config, workdir, stage, section, steps_per_epoch, log,
           **kwargs):
  """The stage's hooks, their `every` converted like every duration."""
  if make_hooks is None:
    return ()
  hooks = list(make_hooks(config, workdir, stage, log=log, **kwargs))
  for hook in hooks:
    hook.every = to_steps(hook.every, steps_per_epoch, section.batch_size,
                          f"evaluation ({stage}) every")
  return hooks


def _run_stage(task, config, section, stage_dir, dataset, mesh, rules,
               sigterm, batches=None, hooks=(), stop_by=None):
  batches = dataset.iterator() if batches is None else batches
  data_sharding = data_lib.make_data_sharding(mesh, sharding_lib.BATCH_AXES)
  try:
    return trainer.run_task(
        task, mesh=mesh, rules=rules, workdir=stage_dir, batches=batches,
        to_global=lambda b: data_lib.to_global_array(b, data_sharding),
        config=section, rng=_stage_rng(config, task.name), sigterm=sigterm,
        hooks=hooks, stop_by=stop_by)
  finally:
    batches.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None, hooks: Optional[HookFactory] = None,
                       started: Optional[float] = None):
  """Trains the configured stages in order, then writes `samples.png`.

  Args:
    config: a training config (see configs/); fields left "auto" (None) are
      derived first (`auto_config.resolve`: classes and channels of an image
      folder, tokenizer sizes for the image size) and the resolved config is
      what `WORKDIR/config.json` records.
    workdir: the run folder; an existing run there is resumed.
    devices: the devices of the mesh (default: all).
    hooks: `(config, workdir, stage, *, log, tokenizer_variables=None) ->
      [trainer.Hook]`, e.g. `maskgit_jax.evaluation.evaluators.make_hooks`
      (what `python -m maskgit_jax.train` passes): evaluators run in the
      loop, every `every` and at the end of each stage. train_lib never
      imports the evaluation package.
    started: when `config.time_budget_s` counts from (time.time(); default:
      now). `python -m maskgit_jax.train` passes its process's start.

  Returns a dict with the final variables of each trained stage and the path
  of the sample grid. Raises `trainer.Preempted` after saving when SIGTERM
  arrives (at any point of the run: it is acted on at the next step).
  """
  with trainer.SigtermFlag() as sigterm:
    return _train_and_evaluate(config, workdir, devices, sigterm, hooks,
                               time.time() if started is None else started)


def prepare(config: ml_collections.ConfigDict, workdir: str,
            make_hooks: Optional[HookFactory] = None, log=print):
  """Everything a run checks and derives before it writes config.json:
  `(resolved config, axis rules, tokenizer, transformer)`, or one ValueError
  (or FileNotFoundError) naming the key. The reliability suite's sweep calls
  this too."""
  config_checks.check_stages(config.stages)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir} is a file, not a folder.")
  for stage in loader.STAGES:
    exported = loader.exported_file(workdir, stage)
    if exported:  # `sample` and `evaluate` read it before any checkpoint.
      raise ValueError(
          f"--workdir={workdir} is an exported folder (it has {exported}): "
          "sample and evaluate would read that file, not what trains there; "
          "train into a new folder.")
  # Fields left "auto" (configs/folder.py) come from the image folder and the
  # image size; contradictions stop here, before config.json is written.
  config = auto_config.resolve(config, workdir, log=log)
  config_checks.check_config(config)
  # The evaluators' settings and `every` durations (their form), before a
  # stage trains rather than when its first evaluation is due.
  for stage in config.stages:
    section = config[config_checks.SECTIONS[stage][0]]
    _hooks(make_hooks, config, workdir, stage, section, 1, log)
  # The models' fields are checked here too, before config.json is written:
  # a rejected value leaves no record that a corrected command would trip on.
  rules = sharding_lib.parse_rules(config.logical_axis_rules)
  tokenizer = factory.tokenizer_from_config(config)
  transformer = factory.transformer_from_config(config, activation_rules=rules)
  return config, rules, tokenizer, transformer


def _train_and_evaluate(config, workdir, devices, sigterm, make_hooks,
                        started):
  log = lambda m: print(m, flush=True) if jax.process_index() == 0 else None  # noqa: E731
  given = config  # its field types: the overrides a refused resume offers
  config, rules, tokenizer, transformer = prepare(config, workdir, make_hooks,
                                                  log)
  new_dir = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"--workdir={workdir} cannot be created: "
                     f"{e.strerror or e}.") from None
  try:
    with run_lock.hold(workdir, jax.process_index()):
      return _record_and_train(config, workdir, devices, sigterm, make_hooks,
                               tokenizer, transformer, rules, log, given,
                               started)
  except BaseException:
    # A folder this run made and left empty (a failure before anything was
    # saved) goes with the record.
    if (new_dir and jax.process_index() == 0 and os.path.isdir(workdir) and
        not os.listdir(workdir)):
      os.rmdir(workdir)
    raise


def _record_and_train(config, workdir, devices, sigterm, make_hooks,
                      tokenizer, transformer, rules, log, given, started):
  new_record = not os.path.isfile(os.path.join(workdir,
                                               config_record.CONFIG_FILE))
  budget = None
  if new_record and config.get("time_budget_s") is not None:
    # This process plans the run's lengths (time_budget.py).
    budget = time_budget.Budget(config.time_budget_s, started,
                                config.transformer_training.num_steps)
  elif not new_record:  # lengths planned when the run started stay
    config = time_budget.adopt_recorded(config, workdir, note=log)
  config_record.record(config, workdir, log=log, flag_types=given)
  try:
    return _train_stages(config, workdir, devices, sigterm, make_hooks,
                         tokenizer, transformer, rules, log, budget)
  except BaseException:
    # A failure before anything was saved (a data error found when the data
    # is first read, a value that fails at compile time) leaves no record
    # that would refuse the corrected command as "other settings".
    if new_record and jax.process_index() == 0:
      config_record.discard_if_untrained(workdir, loader.STAGES, log=log)
    raise


def _train_stages(config, workdir, devices, sigterm, make_hooks, tokenizer,
                  transformer, rules, log, budget=None):
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  log(f"mesh {dict(mesh.shape)} over {mesh.devices.size} "
      f"{mesh.devices.flat[0].platform} device(s)")
  if config.transformer.get("dtype") == precision.AUTO:
    log("stage 2 computes in %s (transformer.dtype=auto: %s)"
        % precision.auto_dtype())
  dcfg = data_lib.config.for_model(config, tokenizer.channels)
  # Both stages' data before either trains: a batch larger than the data
  # stops the run before stage 1, not after it.
  datasets = {stage: _dataset(config, dcfg, workdir, f"{stage}_training")
              for stage in ("tokenizer", "transformer")
              if stage in config.stages}
  out = {}

  tok_vars = None
  if "tokenizer" in config.stages:
    dataset = datasets["tokenizer"]
    section = resolve_durations(config.tokenizer_training,
                                dataset.steps_per_epoch, "tokenizer_training")
    stage_dir = os.path.join(workdir, "tokenizer")
    perceptual = feature_net_task.load_or_train(
        section, dataset, stage_dir, config.seed, log=log)
    task = tokenizer_task.make_task(section, tokenizer, config.image_size,
                                    note=log, perceptual=perceptual)
    if budget is not None:  # this machine's lengths, before stage 1 trains
      records = (datasets["transformer"].num_examples
                 if "transformer" in datasets else 0)
      config = time_budget.plan_lengths(
          config, budget, task, dataset.image_shape, records, mesh, rules,
          _stage_rng(config, "tokenizer"), workdir, log,
          stage2=_stage2_for_timing(config, datasets, tokenizer, transformer))
      section = resolve_durations(config.tokenizer_training,
                                  dataset.steps_per_epoch,
                                  "tokenizer_training")
      task = tokenizer_task.make_task(section, tokenizer, config.image_size,
                                      note=lambda _: None,
                                      perceptual=perceptual)
    hooks = _hooks(make_hooks, config, workdir, "tokenizer", section,
                   dataset.steps_per_epoch, log)
    last = "transformer" not in config.stages
    state = _run_stage(task, config, section, stage_dir, dataset, mesh, rules,
                       sigterm, hooks=hooks,
                       stop_by=budget.deadline if budget and last else None)
    params = state.ema_params if state.ema_params is not None else state.params
    tok_vars = {"params": multihost.to_host(params)}
    out["tokenizer"] = tok_vars

  if "transformer" in config.stages:
    if tok_vars is None:  # The frozen tokenizer: the one model loader.
      tok_vars, _ = loader.load_stage(config, "tokenizer", tokenizer,
                                      workdir=workdir)
    dataset = datasets["transformer"]
    section = resolve_durations(config.transformer_training,
                                dataset.steps_per_epoch,
                                "transformer_training")
    class_names = tuple(config.get("class_names", ()) or dataset.class_names)
    task = transformer_task.make_task(section, tokenizer, tok_vars, transformer,
                                      config.num_classes, class_names)
    batches = None
    if section.get("token_cache", False):
      batches = _token_batches(dataset, tokenizer, tok_vars, workdir, log)
    stop_by = None
    if budget is not None:  # stage 2's length for the time left
      config, stop_by = time_budget.plan_stage2(
          config, budget, task, dataset.image_shape, batches, mesh, rules,
          _stage_rng(config, "transformer"), workdir, log)
      section = resolve_durations(config.transformer_training,
                                  dataset.steps_per_epoch,
                                  "transformer_training")
      task = transformer_task.make_task(section, tokenizer, tok_vars,
                                        transformer, config.num_classes,
                                        class_names)
    hooks = _hooks(make_hooks, config, workdir, "transformer", section,
                   dataset.steps_per_epoch, log, tokenizer_variables=tok_vars)
    state = _run_stage(task, config, section,
                       os.path.join(workdir, "transformer"), dataset, mesh,
                       rules, sigterm, batches=batches, hooks=hooks,
                       stop_by=stop_by)
    params = state.ema_params if state.ema_params is not None else state.params
    out["transformer"] = {"params": multihost.to_host(params)}
    sampler = sampling.MaskGitSampler(tokenizer, tok_vars, transformer,
                                      out["transformer"],
                                      num_classes=config.num_classes)
    if jax.process_index() == 0:
      path = os.path.join(workdir, "samples.png")
      sample_lib.write_sample_grid(config, sampler, path, seed=config.seed,
                                   scale=config.sampling.get("grid_scale", 1),
                                   progress=False)
      out["samples"] = path
      log(f"wrote {path}")
  return out


def _dataset(config, dcfg, workdir: str, section_name: str):
  """The training data of `config[section_name]`, whose labels must fit
  `config.num_classes`: a label at or above it would be read as another
  token (the mask, or past the vocabulary, which JAX clamps), silently."""
  batch_size = config[section_name].batch_size
  try:
    dataset = data_lib.create_dataset(dcfg, "train", batch_size,
                                      cache_dir=os.path.join(workdir,
                                                             "data_index"))
  except data_lib.TooFewRecords as e:
    raise data_lib.TooFewRecords(
        e.num_examples, e.global_batch_size,
        f"{section_name}.batch_size (--config.{section_name}.batch_size=N)"
    ) from None
  if dataset.num_classes > config.num_classes:
    raise ValueError(
        f"config.num_classes={config.num_classes} but the training data "
        f"({dcfg.source}) has {dataset.num_classes} classes: set "
        f"num_classes={dataset.num_classes}.")
  return dataset


def _stage2_for_timing(config, datasets, tokenizer, transformer):
  """What `time_budget.plan_lengths` times stage 2 with before stage 1
  trains (None without stage 2): its task without a tokenizer yet, its rng,
  token ids per example and the codebook size."""
  if "transformer" not in datasets:
    return None
  section = resolve_durations(config.transformer_training,
                              datasets["transformer"].steps_per_epoch,
                              "transformer_training")
  task = transformer_task.make_task(section, tokenizer, None, transformer,
                                    config.num_classes)
  return (task, _stage_rng(config, "transformer"),
          transformer.max_position_embeddings - 1, tokenizer.codebook_size)


def _token_batches(dataset, tokenizer, tok_vars, workdir, log):
  """Stage-2 batches of token ids from the frozen tokenizer's cache
  (`transformer_training.token_cache`; see maskgit_jax/data/token_cache.py).
  Every process builds (or reads) the whole cache; files are replaced
  atomically, so processes sharing a workdir never see a partial one."""
  # The encoder runs data parallel over this process's devices (a batch is
  # the centre views and mirror images of `batch_size` records): on a
  # 2-core CPU the cache took 0.8x the time of one device's.
  batch_size = token_cache.BATCH_SIZE
  split, replicated = multihost.local_batch_split(2 * batch_size)
  variables = tok_vars if split is None else jax.device_put(tok_vars,
                                                            replicated)
  apply = jax.jit(lambda v, x: tokenizer.apply(
      v, x, method=tokenizer.encode_to_indices))
  encode = (lambda x: apply(variables, x if split is None else
                            jax.device_put(x, split)))
  digest = token_cache.tokenizer_digest(tok_vars)
  cache = token_cache.build(dataset, encode,
                            os.path.join(workdir, "token_cache"),
                            tokenizer_digest=digest, batch_size=batch_size,
                            log=log)
  return token_cache.TokenBatches(dataset, cache)
