"""One-line checks of values a user gives (config keys, flags).

Every check of "an int >= 1", "a number in [0, 1)" and the like goes
through here, so each refusal reads the same way: one ValueError,
`KEY=VALUE must be EXPECTED.`, naming the key and the value as given. A bool
is never an int or a number here (`True` is not a size), and a number is
finite unless a check says otherwise.

  checks.check_int("tokenizer_training.batch_size", 0, low=1)
  -> ValueError: tokenizer_training.batch_size=0 must be an int >= 1.
  checks.check_number("optimizer.b1", 1.0, low=0, high=1, open_high=True)
  -> ValueError: optimizer.b1=1.0 must be a number in [0, 1).
"""

import math
from typing import Any, Optional


def is_int(value: Any, low: Optional[int] = None,
           high: Optional[int] = None) -> bool:
  """An int (not a bool) in [low, high] (a None bound: none that side)."""
  return (isinstance(value, int) and not isinstance(value, bool) and
          (low is None or value >= low) and (high is None or value <= high))


def is_number(value: Any, low: Optional[float] = None,
              high: Optional[float] = None, *, open_low: bool = False,
              open_high: bool = False, finite: bool = True) -> bool:
  """An int or float (not a bool, not NaN; finite unless `finite=False`)
  within the bounds, each closed unless `open_low` / `open_high`."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return False
  if isinstance(value, float) and (
      math.isnan(value) or (finite and math.isinf(value))):
    return False  # (an int is finite, however large: no float conversion)
  if low is not None and (value <= low if open_low else value < low):
    return False
  return high is None or (value < high if open_high else value <= high)


def refuse(key: str, value: Any, expected: str) -> None:
  """Raises the one-line ValueError: `KEY=VALUE must be EXPECTED.`"""
  raise ValueError(f"{key}={value!r} must be {expected}.")


def _g(x) -> str:
  return f"{x:g}" if isinstance(x, float) else str(x)


def int_text(low: Optional[int] = None, high: Optional[int] = None) -> str:
  """"an int >= 1", "an int in [1, 7]", ... for the bounds."""
  if low is not None and high is not None:
    return f"an int in [{low}, {high}]"
  if low is not None:
    return f"an int >= {low}"
  return f"an int <= {high}" if high is not None else "an int"


def number_text(low=None, high=None, *, open_low=False, open_high=False,
                finite=True) -> str:
  """"a number in [0, 1)", "a finite number > 0", ... for the bounds."""
  if low is not None and high is not None:
    return (f"a number in {'(' if open_low else '['}{_g(low)}, "
            f"{_g(high)}{')' if open_high else ']'}")
  kind = "a finite number" if finite else "a number"
  if low is not None:
    return f"{kind} {'>' if open_low else '>='} {_g(low)}"
  if high is not None:
    return f"{kind} {'<' if open_high else '<='} {_g(high)}"
  return kind


def _text(text: str, allow_none: bool, note: str) -> str:
  if allow_none:
    text += " or None"
  return f"{text} ({note})" if note else text


def check_int(key: str, value: Any, low: Optional[int] = None,
              high: Optional[int] = None, *, allow_none: bool = False,
              note: str = "") -> Any:
  """`value` if it is an int in [low, high] (or None with `allow_none`),
  else the one-line error naming `key`; `note` is added in parentheses."""
  if (allow_none and value is None) or is_int(value, low, high):
    return value
  refuse(key, value, _text(int_text(low, high), allow_none, note))


def check_number(key: str, value: Any, low=None, high=None, *,
                 open_low: bool = False, open_high: bool = False,
                 finite: bool = True, allow_none: bool = False,
                 note: str = "") -> Any:
  """`value` if it is a number within the bounds (or None with
  `allow_none`), else the one-line error naming `key`."""
  bounds = dict(open_low=open_low, open_high=open_high, finite=finite)
  if (allow_none and value is None) or is_number(value, low, high, **bounds):
    return value
  refuse(key, value, _text(number_text(low, high, **bounds), allow_none,
                           note))
