"""common/checks: the one way a bad value is refused."""
import math

import pytest

from maskgit_jax.common import checks


def test_ints_are_ints_not_bools_or_floats():
  assert checks.is_int(0) and checks.is_int(-3) and checks.is_int(5, 1, 5)
  assert not checks.is_int(True) and not checks.is_int(2.0)
  assert not checks.is_int(None) and not checks.is_int("3")
  assert not checks.is_int(0, 1) and not checks.is_int(6, 1, 5)


def test_numbers_are_finite_unless_asked_and_bounds_open_or_closed():
  assert checks.is_number(0) and checks.is_number(0.5, 0, 1)
  assert not checks.is_number(False) and not checks.is_number("1")
  assert not checks.is_number(math.nan, finite=False)
  assert not checks.is_number(math.inf) and checks.is_number(math.inf,
                                                             finite=False)
  assert checks.is_number(0, 0) and not checks.is_number(0, 0, open_low=True)
  assert checks.is_number(1, 0, 1) and not checks.is_number(1, 0, 1,
                                                            open_high=True)
  assert not checks.is_number(-1e-9, 0)
  assert checks.is_number(10**400, 0)  # no OverflowError converting it


@pytest.mark.parametrize("call,message", [
    (lambda: checks.check_int("a.b", 0, low=1), "a.b=0 must be an int >= 1."),
    (lambda: checks.check_int("a.b", True, low=1),
     "a.b=True must be an int >= 1."),
    (lambda: checks.check_int("k", 9, 1, 8), "k=9 must be an int in [1, 8]."),
    (lambda: checks.check_int("k", -1, low=0, allow_none=True, note="0: off"),
     "k=-1 must be an int >= 0 or None (0: off)."),
    (lambda: checks.check_number("o.b1", 1.0, 0, 1, open_high=True),
     "o.b1=1.0 must be a number in [0, 1)."),
    (lambda: checks.check_number("f", 0.0, 0, 1, open_low=True),
     "f=0.0 must be a number in (0, 1]."),
    (lambda: checks.check_number("t", math.inf, 0),
     "t=inf must be a finite number >= 0."),
    (lambda: checks.check_number("t", -2, 0, open_low=True, finite=False),
     "t=-2 must be a number > 0."),
    (lambda: checks.check_number("s", "x", allow_none=True),
     "s='x' must be a finite number or None."),
])
def test_a_refusal_is_one_line_naming_key_value_and_what_is_expected(
    call, message):
  with pytest.raises(ValueError) as e:
    call()
  assert str(e.value) == message


def test_accepted_values_come_back():
  assert checks.check_int("k", None, low=1, allow_none=True) is None
  assert checks.check_int("k", 3, low=1) == 3
  assert checks.check_number("k", 0.25, 0, 1) == 0.25
