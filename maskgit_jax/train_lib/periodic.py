"""Durations -> steps (in one place) and the one periodic-action predicate."""

import math
import re
from typing import Optional, Union

Duration = Union[int, float, str, None]

# The keys of a stage's section that are durations (steps, "N epochs", "N
# examples").
DURATION_KEYS = ("num_steps", "log_every", "checkpoint_every", "image_every",
                 "disc_start_step", "decoder_finetune_steps")

_PATTERN = re.compile(r"^\s*([0-9.eE+-]+)\s*(steps?|ep|epochs?|ex|examples?)?\s*$")


def to_steps(value: Duration, *, steps_per_epoch: Optional[float] = None,
             batch_size: Optional[int] = None, name: str = "duration") -> int:
  """Converts a duration to a number of steps.

  Accepts an int (steps), or a string "N steps" / "N epochs" (also "Nep") /
  "N examples" (also "Nex"). 0 or None means never (returns 0).

  Raises:
    ValueError: naming `name` and the value, when it cannot be converted.
  """
  if value is None:
    return 0
  if isinstance(value, bool):
    raise ValueError(f"{name}={value!r} is not a duration.")
  if isinstance(value, (int, float)):
    number, unit = float(value), "steps"
  else:
    match = _PATTERN.match(str(value))
    if not match:
      raise ValueError(f"{name}={value!r}: expected e.g. 1000, '1000 steps', "
                       "'2 epochs' or '50000 examples'.")
    number, unit = float(match.group(1)), match.group(2) or "steps"
  if not math.isfinite(number):
    raise ValueError(f"{name}={value!r} is not a finite duration.")
  if number < 0:
    raise ValueError(f"{name}={value!r} must not be negative.")
  if unit.startswith("step"):
    if number != int(number):
      raise ValueError(f"{name}={value!r} must be a whole number of steps.")
    return int(number)
  if unit.startswith("ep"):
    if not steps_per_epoch:
      raise ValueError(f"{name}={value!r} is in epochs, but the data set size "
                       "is unknown.")
    return int(math.ceil(number * steps_per_epoch))
  if not batch_size:
    raise ValueError(f"{name}={value!r} is in examples, but the batch size is "
                     "unknown.")
  return int(math.ceil(number / batch_size))


def is_time(step: int, every: int, last_step: Optional[int] = None) -> bool:
  """True at multiples of `every` (>0), and at `last_step` if given."""
  if last_step is not None and step == last_step:
    return True
  return every > 0 and step > 0 and step % every == 0
