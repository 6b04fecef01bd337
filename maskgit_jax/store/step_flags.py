"""`--tokenizer_step` and `--transformer_step` of `python -m
maskgit_jax.sample` and `evaluate`: a stage's checkpoint of that step in the
run's folder instead of the newest (`loader.load_models(steps=...)`)."""
from typing import Dict, List

from absl import flags

from maskgit_jax.store import loader

_FLAGS = {stage: flags.DEFINE_integer(
    f"{stage}_step", None, f"The {stage} checkpoint of this step in "
    f"WORKDIR/{stage}/checkpoints (default: the newest).")
          for stage in loader.STAGES}


def steps() -> Dict[str, int]:
  """{stage: step} of the flags that were set, for
  `loader.load_models(steps=)`."""
  return {stage: flag.value for stage, flag in _FLAGS.items()
          if flag.value is not None}


def given() -> List[str]:
  """Names of the step flags that were set."""
  return [flag.name for flag in _FLAGS.values() if flag.value is not None]
