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

from maskgit_jax.common import checks
from maskgit_jax.libml import parallel_decode

_INTEGER, _FLOAT = flags.DEFINE_integer, flags.DEFINE_float
_BOOL = flags.DEFINE_bool
# (define, name = the `config.sampling` key, help, enum values or None).
_SPECS = (
    (_INTEGER, "num_iter", "Decoding iterations.", None),
    (_FLOAT, "choice_temperature",
     "Temperature of the choice of tokens to keep.", None),
    (_FLOAT, "guidance_scale", "Classifier-free guidance scale.", None),
    (flags.DEFINE_enum, "guidance_schedule",
     "How the guidance scale grows over the iterations.",
     parallel_decode.GUIDANCE_SCHEDULES),
    (_FLOAT, "sampling_temperature", "Temperature of token sampling.", None),
    (_FLOAT, "sampling_temperature_end", "Token temperature at the last "
     "iteration, reached linearly from --sampling_temperature.", None),
    (_INTEGER, "top_k", "Sample among the k likeliest tokens (0 = all).",
     None),
    (flags.DEFINE_enum, "position_scheduler", "Which tokens to keep each "
     "iteration: the most confident (the release's) or the next ones of a "
     "fixed Halton order over the grid.", parallel_decode.POSITION_SCHEDULERS),
    (_BOOL, "halton_random_shift",
     "halton: a random cyclic offset of the order per sample.", None),
    (_INTEGER, "refine_steps", "Corrector steps after the last iteration, "
     "each re-sampling the least confident generated tokens (0 = off).",
     None),
    (_FLOAT, "refine_fraction",
     "Share of the generated tokens each corrector step re-samples.", None),
    (_FLOAT, "refine_choice_temperature", "Gumbel noise on the confidence "
     "in the corrector's choice (0: the least confident).", None),
    (_FLOAT, "refine_temperature", "Token temperature of the corrector steps "
     "(unset: the last iteration's).", None),
)
# Every decoding flag, by its `config.sampling` key.
_FLAGS: Dict[str, Any] = {
    name: (define(name, None, list(values), help_text) if values else
           define(name, None, help_text))
    for define, name, help_text, values in _SPECS}
NUM_ITER = _FLAGS["num_iter"]


def overrides() -> Dict[str, Any]:
  """Every decoding flag by its `config.sampling` key (None: not given)."""
  return {name: flag.value for name, flag in _FLAGS.items()}


def given() -> Dict[str, Any]:
  """The decoding flags that were given, by their `config.sampling` key."""
  return {k: v for k, v in overrides().items() if v is not None}


def apply(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose `sampling` takes the given flags (the
  original when none was given). --num_iter below 1 is one ValueError."""
  values = given()
  if not values:
    return config
  checks.check_int("--num_iter", values.get("num_iter", 1), low=1)
  config = copy.deepcopy(config)
  with config.unlocked():
    for key, value in values.items():
      config.sampling[key] = value
  return config
