"""The decoding flags of `python -m maskgit_jax.sample` and `evaluate`.

Each flag left unset (None) keeps the config's `config.sampling` value, so
`--workdir=RUN` alone decodes as the run was configured, and e.g.
`evaluate --workdir=RUN --sampling_temperature_end=0.5` measures another
setting on the same weights without a config file (a folder run's sizes and
classes are derived at train start, so `--config=configs/folder.py` cannot
stand in for its config.json).
"""
import copy
from typing import Any, Dict

from absl import flags
import ml_collections

from maskgit_jax.libml import parallel_decode

NUM_ITER = flags.DEFINE_integer("num_iter", None, "Decoding iterations.")
_CHOICE_T = flags.DEFINE_float("choice_temperature", None,
                               "Temperature of the choice of tokens to keep.")
_GUIDANCE = flags.DEFINE_float("guidance_scale", None,
                               "Classifier-free guidance scale.")
_GUIDANCE_SCHEDULE = flags.DEFINE_enum(
    "guidance_schedule", None, list(parallel_decode.GUIDANCE_SCHEDULES),
    "How the guidance scale grows over the iterations.")
_SAMPLING_T = flags.DEFINE_float("sampling_temperature", None,
                                 "Temperature of token sampling.")
_SAMPLING_T_END = flags.DEFINE_float(
    "sampling_temperature_end", None, "Token temperature at the last "
    "iteration, reached linearly from --sampling_temperature.")
_TOP_K = flags.DEFINE_integer("top_k", None,
                              "Sample among the k likeliest tokens (0 = all).")
_POSITION_SCHEDULER = flags.DEFINE_enum(
    "position_scheduler", None, list(parallel_decode.POSITION_SCHEDULERS),
    "Which tokens to keep each iteration: the most confident (the release's) "
    "or the next ones of a fixed Halton order over the grid.")
_HALTON_SHIFT = flags.DEFINE_bool(
    "halton_random_shift", None,
    "halton: a random cyclic offset of the order per sample.")
_REFINE_STEPS = flags.DEFINE_integer(
    "refine_steps", None, "Corrector steps after the last iteration, each "
    "re-sampling the least confident generated tokens (0 = off).")
_REFINE_FRACTION = flags.DEFINE_float(
    "refine_fraction", None, "Share of the generated tokens each corrector "
    "step re-samples.")
_REFINE_CHOICE_T = flags.DEFINE_float(
    "refine_choice_temperature", None, "Gumbel noise on the confidence in "
    "the corrector's choice (0: the least confident).")

_REFINE_T = flags.DEFINE_float(
    "refine_temperature", None, "Token temperature of the corrector steps "
    "(unset: the last iteration's).")


def overrides() -> Dict[str, Any]:
  """Every decoding flag by its `config.sampling` key (None: not given)."""
  return dict(num_iter=NUM_ITER.value, choice_temperature=_CHOICE_T.value,
              guidance_scale=_GUIDANCE.value,
              guidance_schedule=_GUIDANCE_SCHEDULE.value,
              sampling_temperature=_SAMPLING_T.value,
              sampling_temperature_end=_SAMPLING_T_END.value,
              top_k=_TOP_K.value,
              position_scheduler=_POSITION_SCHEDULER.value,
              halton_random_shift=_HALTON_SHIFT.value,
              refine_steps=_REFINE_STEPS.value,
              refine_fraction=_REFINE_FRACTION.value,
              refine_choice_temperature=_REFINE_CHOICE_T.value,
              refine_temperature=_REFINE_T.value)


def given() -> Dict[str, Any]:
  """The decoding flags that were given, by their `config.sampling` key."""
  return {k: v for k, v in overrides().items() if v is not None}


def apply(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose `sampling` takes the given flags (the
  original when none was given). --num_iter below 1 is one ValueError."""
  values = given()
  if not values:
    return config
  if values.get("num_iter", 1) < 1:
    raise ValueError(f"--num_iter must be >= 1, got {values['num_iter']}.")
  config = copy.deepcopy(config)
  with config.unlocked():
    for key, value in values.items():
      config.sampling[key] = value
  return config
