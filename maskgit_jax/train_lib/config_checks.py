"""`check_config(config)`: every value a training run can check before it
writes `config.json` or trains a step, each refused with one line naming
the key and the value.

What is checked here would otherwise fail only when its stage starts (stage
2's optimizer after hours of stage 1), fail when the data is first read, or
be accepted and give wrong results silently (an EMA decay of -1, a GAN
weight of NaN). The models' sizes are checked where the models are built
(`nets/factory`), the sampling options by `generation/sample_lib`, the
data's fields by `data/config.resolve`; this module calls them all.
"""

import os

import ml_collections

from maskgit_jax import data as data_lib
from maskgit_jax.common import checks
from maskgit_jax.data import sources as data_sources
from maskgit_jax.generation import sample_lib
from maskgit_jax.libml import losses
from maskgit_jax.libml import mask_schedule
from maskgit_jax.store import loader
from maskgit_jax.train_lib import auto_config
from maskgit_jax.train_lib import feature_net_task
from maskgit_jax.train_lib import optim
from maskgit_jax.train_lib import periodic
from maskgit_jax.train_lib import time_budget
from maskgit_jax.train_lib import token_noise
from maskgit_jax.train_lib import tokenizer_task

# Each stage's config section and its optimizers' subsections.
SECTIONS = {"tokenizer": ("tokenizer_training", ("g_optimizer",
                                                 "d_optimizer")),
            "transformer": ("transformer_training", ("optimizer",))}


def check_stages(stages) -> None:
  """`config.stages`: a non-empty sequence of known stage names."""
  if isinstance(stages, str) or not stages:
    shown = stages if isinstance(stages, str) else tuple(stages or ())
    raise ValueError(f"config.stages={shown!r} names no stage to train; "
                     f"give one or both of {loader.STAGES}.")
  for stage in stages:
    if stage not in loader.STAGES:
      raise ValueError(f"Unknown stage {stage!r} in config.stages; expected "
                       f"{loader.STAGES}.")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises one ValueError naming the first bad key and its value."""
  check_stages(config.stages)
  time_budget.check(config)
  # Fields a folder's config leaves to `auto_config.resolve` are checked
  # once resolved (the run calls this after it).
  if not auto_config.is_auto(config.num_classes):
    checks.check_int("config.num_classes", config.num_classes, low=1)
  channels = config.tokenizer.get("channels")
  channels = None if auto_config.is_auto(channels) else channels
  if channels is not None and channels not in (1, 3):
    checks.refuse("config.tokenizer.channels", channels,
                  "1 or 3 (grey or RGB images)")
  data_sources.check_splits(config.data)
  _check_model_owned_data_fields(config, channels)
  # The data's fields as the run reads them (the models' image size and
  # channels); no file is read here.
  data_lib.config.resolve(data_lib.config.for_model(config, channels or 3))
  for stage in config.stages:
    name, optimizers = SECTIONS[stage]
    _check_section(config[name], name)
    for key in optimizers:
      optim.check_optimizer_config(config[name][key], f"{name}.{key}")
  if "tokenizer" in config.stages:
    _check_tokenizer_training(config.tokenizer_training, config.num_classes)
    released_file = config.get("tokenizer_checkpoint", "")
    if released_file:  # Stage 2 would train on the run's own tokenizer.
      raise ValueError(
          f"config.tokenizer_checkpoint={released_file!r} is read only by a "
          "stage-2 run on a released tokenizer, but config.stages="
          f"{tuple(config.stages)!r} trains its own: set "
          "--config.stages=transformer or --config.tokenizer_checkpoint=''.")
  if "transformer" in config.stages:
    _check_transformer_training(config.transformer_training)
    sample_lib.decode_options(config)  # Nonsense sampling values: one line.
    for key in ("samples_per_class", "grid_scale"):  # The final grid's.
      checks.check_int(f"sampling.{key}", config.sampling.get(key, 1), low=1)


def _check_model_owned_data_fields(config, channels) -> None:
  """`data.image_size` and `data.channels` are the models' (`for_model`
  sets them from `config.image_size` and `tokenizer.channels`): a value
  given there that differs was silently not read."""
  defaults = data_lib.config.get_config()
  for key, where, value in (("image_size", "config.image_size",
                             config.image_size),
                            ("channels", "config.tokenizer.channels",
                             channels)):
    given = config.data.get(key, defaults[key])
    if value is not None and given not in (defaults[key], value):
      raise ValueError(
          f"config.data.{key}={given!r} is not read by training: the images "
          f"are {where}={value!r}; set {where} instead.")


def _check_section(section, name: str) -> None:
  """What both stages' sections share: durations, batch, checkpoints, EMA."""
  for key in periodic.DURATION_KEYS:  # Their form; epochs need the data.
    if key in section:
      periodic.to_steps(section[key], steps_per_epoch=1, batch_size=1,
                        name=f"{name}.{key}")
  if periodic.to_steps(section.num_steps, steps_per_epoch=1, batch_size=1,
                       name=f"{name}.num_steps") <= 0:
    raise ValueError(f"{name}.num_steps={section.num_steps!r} must be "
                     "positive.")
  checks.check_int(f"{name}.batch_size", section.batch_size, low=1)
  checks.check_int(f"{name}.keep_checkpoints",
                   section.get("keep_checkpoints", 3), low=1,
                   allow_none=True, note="keep all")
  checks.check_number(f"{name}.ema_decay", section.get("ema_decay", 0.0), 0,
                      1, open_high=True, note="0: no EMA")


def _check_tokenizer_training(t, num_classes: int) -> None:
  name = "tokenizer_training"
  feature_net_task.check(t, num_classes)
  for key in ("channel_multiplier", "max_filters"):
    checks.check_int(f"{name}.discriminator.{key}",
                     t.discriminator.get(key, 1), low=1)
  optim.check_optimizer_config(tokenizer_task.decoder_optimizer_config(t),
                               f"{name}.decoder_optimizer")
  token_noise.settings(t)
  for key in ("perceptual_weight", "generator_adversarial_weight",
              "r1_cost", "lecam_weight", "codebook_restart_threshold"):
    checks.check_number(f"{name}.{key}", t.get(key, 0.0), low=0)
  for key, choices in (("gan_loss", losses.GAN_LOSSES),
                       ("reconstruction_loss", losses.RECONSTRUCTION_LOSSES)):
    if t.get(key, choices[0]) not in choices:
      checks.refuse(f"{name}.{key}", t.get(key),
                    "one of " + ", ".join(map(repr, choices)))
  weights = t.get("perceptual_weights", "")
  if weights and not os.path.isfile(weights):
    raise ValueError(f"{name}.perceptual_weights={weights!r}: no such file.")


def _check_transformer_training(t) -> None:
  name = "transformer_training"
  try:
    mask_schedule.validate(t.mask_scheduling_method)
  except ValueError as e:
    raise ValueError(f"{name}.mask_scheduling_method: {e}") from None
  checks.check_number(f"{name}.min_mask_ratio", t.get("min_mask_ratio", 0.0),
                      0, 1, open_high=True,
                      note="the minimum masked fraction")
  for key in ("class_dropout", "label_smoothing"):
    checks.check_number(f"{name}.{key}", t.get(key, 0.0), 0, 1)
  # The grids of samples written while training (`image_every`).
  samples = t.get("samples", {})
  checks.check_int(f"{name}.samples.per_class", samples.get("per_class", 4),
                   low=1)
  checks.check_int(f"{name}.samples.num_iter", samples.get("num_iter", 12),
                   low=1)
  checks.check_number(f"{name}.samples.choice_temperature",
                      samples.get("choice_temperature", 4.5), low=0)
