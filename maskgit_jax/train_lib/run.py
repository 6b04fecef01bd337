"""`train_and_evaluate(config, workdir)`: both stages into one workdir.

Workdir layout:
  config.json                       the resolved config
  metrics.jsonl, tensorboard/       scalars of both stages
  images/                           reconstructions (stage 1), samples (stage 2)
  tokenizer/checkpoints/<step>/     stage-1 checkpoints (orbax)
  transformer/checkpoints/<step>/   stage-2 checkpoints
  samples.png                       the final class-conditional grid
  data_index/                       cached folder indexes

Each stage resumes from its newest readable checkpoint and is skipped when it
is complete, so re-running the same command continues an interrupted run.
"""

import os
from typing import Any, Dict, Optional

import jax
import ml_collections
import numpy as np

from maskgit_jax import data as data_lib
from maskgit_jax import distributed
from maskgit_jax import models
from maskgit_jax import official
from maskgit_jax import sample_lib
from maskgit_jax.data import token_cache
from maskgit_jax.libml import mask_schedule
from maskgit_jax.libml import sampling
from maskgit_jax.train_lib import auto_config
from maskgit_jax.train_lib import checkpoint as checkpoint_lib
from maskgit_jax.train_lib import optim
from maskgit_jax.train_lib import periodic
from maskgit_jax.train_lib import sharding as sharding_lib
from maskgit_jax.train_lib import tokenizer_task
from maskgit_jax.train_lib import trainer
from maskgit_jax.train_lib import transformer_task

STAGES = ("tokenizer", "transformer")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  path = os.path.join(workdir, "config.json")
  if jax.process_index() == 0:
    sample_lib.atomic_write(path, lambda p: open(p, "w").write(
        config.to_json_best_effort(indent=1, sort_keys=True)))
  return path


def data_config(config: ml_collections.ConfigDict,
                channels: int) -> ml_collections.ConfigDict:
  """`config.data` with image size and channels taken from the model config."""
  d = ml_collections.ConfigDict(config.data.to_dict())
  d.image_size = config.image_size
  d.channels = channels
  d.seed = config.seed if d.get("seed") is None else d.seed
  return d


def restore_params(checkpoint_dir: str, prefer_ema: bool = True
                   ) -> Optional[Dict[str, Any]]:
  """`{"params": ...}` from the newest readable checkpoint (EMA if present),
  on any device topology; None when the folder holds no checkpoint."""
  return checkpoint_lib.restore_params_with_info(checkpoint_dir, prefer_ema)[0]


def _stage_rng(config, stage: str) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(config.seed),
                            STAGES.index(stage))


DURATION_KEYS = ("num_steps", "log_every", "checkpoint_every", "image_every",
                 "disc_start_step")


def resolve_durations(section: ml_collections.ConfigDict, num_examples: int,
                      name: str) -> ml_collections.ConfigDict:
  """A copy of a stage section with every duration in steps (one place)."""
  values = section.to_dict()
  steps_per_epoch = num_examples / values["batch_size"]
  for key in DURATION_KEYS:
    if key in values:
      values[key] = periodic.to_steps(
          values[key], steps_per_epoch=steps_per_epoch,
          batch_size=values["batch_size"], name=f"{name}.{key}")
  if values["num_steps"] <= 0:
    raise ValueError(f"{name}.num_steps={section.num_steps} must be positive.")
  return ml_collections.ConfigDict(values)


def _run_stage(task, config, section, stage_dir, dataset, mesh, rules,
               sigterm, batches=None):
  batches = dataset.iterator() if batches is None else batches
  data_sharding = data_lib.make_data_sharding(mesh, sharding_lib.BATCH_AXES)
  try:
    return trainer.run_task(
        task, mesh=mesh, rules=rules, workdir=stage_dir, batches=batches,
        to_global=lambda b: data_lib.to_global_array(b, data_sharding),
        config=section, rng=_stage_rng(config, task.name), sigterm=sigterm)
  finally:
    batches.close()


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks, before anything trains, what would otherwise fail only when its
  stage starts (e.g. stage 2's optimizer after hours of stage 1)."""
  sections = {"tokenizer": ("tokenizer_training",
                            ("g_optimizer", "d_optimizer")),
              "transformer": ("transformer_training", ("optimizer",))}
  for stage in config.stages:
    name, optimizers = sections[stage]
    section = config[name]
    batch = section.batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
      raise ValueError(f"{name}.batch_size={batch!r} must be an int >= 1.")
    keep = section.get("keep_checkpoints", 3)
    if keep is not None and (isinstance(keep, bool) or
                             not isinstance(keep, int) or keep < 1):
      raise ValueError(f"{name}.keep_checkpoints={keep!r} must be an int "
                       ">= 1 or None (keep all).")
    for key in optimizers:
      optim.check_optimizer_config(section[key], f"{name}.{key}")
  if "transformer" in config.stages:
    sample_lib.decode_options(config)  # Nonsense sampling values: one line.
    per_class = config.transformer_training.get("samples", {}).get(
        "per_class", 4)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or (
        per_class < 1):
      raise ValueError(f"transformer_training.samples.per_class={per_class!r}"
                       " must be an int >= 1.")
    method = config.transformer_training.mask_scheduling_method
    try:
      mask_schedule.validate(method)
    except ValueError as e:
      raise ValueError(
          f"transformer_training.mask_scheduling_method: {e}") from None
    low = config.transformer_training.get("min_mask_ratio", 0.0)
    if (isinstance(low, bool) or not isinstance(low, (int, float)) or
        not 0.0 <= low < 1.0):
      raise ValueError(f"transformer_training.min_mask_ratio={low!r} must be "
                       "a number in [0, 1) (the minimum masked fraction).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None):
  """Trains the configured stages in order, then writes `samples.png`.

  Args:
    config: a training config (see configs/); fields left "auto" (None) are
      derived first (`auto_config.resolve`: classes and channels of an image
      folder, tokenizer sizes for the image size) and the resolved config is
      what `WORKDIR/config.json` records.
    workdir: the run folder; an existing run there is resumed.
    devices: the devices of the mesh (default: all).

  Returns a dict with the final variables of each trained stage and the path
  of the sample grid. Raises `trainer.Preempted` after saving when SIGTERM
  arrives (at any point of the run: it is acted on at the next step).
  """
  with trainer.SigtermFlag() as sigterm:
    return _train_and_evaluate(config, workdir, devices, sigterm)


def _train_and_evaluate(config, workdir, devices, sigterm):
  for stage in config.stages:
    if stage not in STAGES:
      raise ValueError(f"Unknown stage {stage!r} in config.stages; expected "
                       f"{STAGES}.")
  log = lambda m: print(m, flush=True) if jax.process_index() == 0 else None  # noqa: E731
  # Fields left "auto" (configs/folder.py) come from the image folder and the
  # image size; contradictions stop here, before config.json is written.
  config = auto_config.resolve(config, workdir, log=log)
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  write_config(config, workdir)
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  tokenizer = models.tokenizer_from_config(config)
  transformer = models.transformer_from_config(config, activation_rules=rules)
  dcfg = data_config(config, tokenizer.channels)
  out = {}

  tok_vars = None
  if "tokenizer" in config.stages:
    section = config.tokenizer_training
    dataset = data_lib.create_dataset(dcfg, "train", section.batch_size,
                                      cache_dir=os.path.join(workdir,
                                                             "data_index"))
    section = resolve_durations(section, dataset.num_examples,
                                "tokenizer_training")
    task = tokenizer_task.make_task(section, tokenizer, config.image_size,
                                    note=log)
    state = _run_stage(task, config, section, os.path.join(workdir, "tokenizer"),
                       dataset, mesh, rules, sigterm)
    params = state.ema_params if state.ema_params is not None else state.params
    tok_vars = {"params": distributed.to_host(params)}
    out["tokenizer"] = tok_vars
    _evaluate_after(config, workdir, "tokenizer", section, log,
                    tokenizer_variables=tok_vars)

  if "transformer" in config.stages:
    if tok_vars is None:
      tok_vars = load_tokenizer_variables(config, workdir, tokenizer)
    section = config.transformer_training
    dataset = data_lib.create_dataset(dcfg, "train", section.batch_size,
                                      cache_dir=os.path.join(workdir,
                                                             "data_index"))
    section = resolve_durations(section, dataset.num_examples,
                                "transformer_training")
    class_names = tuple(config.get("class_names", ()) or dataset.class_names)
    task = transformer_task.make_task(section, tokenizer, tok_vars, transformer,
                                      config.num_classes, class_names)
    batches = None
    if section.get("token_cache", False):
      batches = _token_batches(dataset, tokenizer, tok_vars, workdir, log)
    state = _run_stage(task, config, section,
                       os.path.join(workdir, "transformer"), dataset, mesh,
                       rules, sigterm, batches=batches)
    params = state.ema_params if state.ema_params is not None else state.params
    out["transformer"] = {"params": distributed.to_host(params)}
    _evaluate_after(config, workdir, "transformer", section, log,
                    tokenizer_variables=tok_vars,
                    transformer_variables=out["transformer"])
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


def _token_batches(dataset, tokenizer, tok_vars, workdir, log):
  """Stage-2 batches of token ids from the frozen tokenizer's cache
  (`transformer_training.token_cache`; see maskgit_jax/data/token_cache.py).
  Every process builds (or reads) the whole cache; files are replaced
  atomically, so processes sharing a workdir never see a partial one."""
  encode = jax.jit(lambda x: tokenizer.apply(
      tok_vars, x, method=tokenizer.encode_to_indices))
  digest = token_cache.tokenizer_digest(tok_vars)
  cache = token_cache.build(dataset, encode,
                            os.path.join(workdir, "token_cache"),
                            tokenizer_digest=digest, log=log)
  return token_cache.TokenBatches(dataset, cache)


def _evaluate_after(config, workdir, stage, section, log, **variables):
  """The periodic evaluation hook: after each stage when
  `config.evaluation.enabled` (see `evaluate_lib.evaluate_after_stage`)."""
  if not config.get("evaluation") or not config.evaluation.enabled:
    return None
  # evaluate_lib builds on this module; imported only when evaluating.
  from maskgit_jax import evaluate_lib  # pylint: disable=import-outside-toplevel
  return evaluate_lib.evaluate_after_stage(
      config, workdir, stage, step=int(section.num_steps), log=log, **variables)


def load_tokenizer_variables(config, workdir, tokenizer):
  """Stage-2 tokenizer: `config.tokenizer_checkpoint` (released format) or
  this workdir's stage-1 checkpoints."""
  path = config.get("tokenizer_checkpoint", "")
  images = np.zeros((1, config.image_size, config.image_size,
                     tokenizer.channels), np.float32)
  if path:
    return official.load_variables(
        path, tokenizer, images,
        method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x)))
  variables = restore_params(os.path.join(workdir, "tokenizer", "checkpoints"))
  if variables is None:
    raise ValueError(
        f"Stage 2 needs a tokenizer: no stage-1 checkpoint in "
        f"{os.path.join(workdir, 'tokenizer', 'checkpoints')} and "
        "config.tokenizer_checkpoint is empty.")
  expected = official.model_shapes(
      tokenizer, images,
      method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x)))
  official.check_tree(variables, expected, f"{workdir}/tokenizer")
  return variables
