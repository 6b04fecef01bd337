"""Mask schedules: values equal the release's formulas, endpoints, monotonicity."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from maskgit_jax.libml import mask_schedule

METHODS = ["uniform", "cosine", "pow1", "pow2", "pow2.5", "pow0.5", "log", "exp"]
RATIOS = np.linspace(0.0, 0.999, 200).astype(np.float32)


def reference(ratio, n, method):
  """The release's formulas, written out in numpy."""
  r = np.asarray(ratio, np.float64)
  if method == "uniform":
    m = 1 - r
  elif method.startswith("pow"):
    m = 1 - r**float(method[3:])
  elif method == "cosine":
    m = np.cos(math.pi / 2 * r)
  elif method == "log":
    with np.errstate(divide="ignore"):
      m = -np.log2(r) / np.log2(n)
  else:
    m = 1 - np.exp2(-np.log2(n) * (1 - r))
  return np.clip(m, 1e-6, 1.)


@pytest.mark.parametrize("method", METHODS)
def test_matches_reference_formula(method):
  got = np.asarray(mask_schedule.schedule(jnp.asarray(RATIOS), 256, method))
  np.testing.assert_allclose(got, reference(RATIOS, 256, method), rtol=2e-6,
                             atol=2e-7)


@pytest.mark.parametrize("method", METHODS)
def test_endpoints_and_monotonic(method):
  values = np.asarray(mask_schedule.schedule(jnp.asarray(RATIOS), 256, method))
  start = 1 - 1 / 256 if method == "exp" else 1.0  # exp starts at 1 - 1/N
  assert values[0] == pytest.approx(start, abs=1e-6)
  assert np.all(values >= 1e-6) and np.all(values <= 1.0)
  assert np.all(np.diff(values) <= 1e-7), "mask ratio must not increase"
  end = float(mask_schedule.schedule(jnp.float32(1.0), 256, method))
  assert end == pytest.approx(1e-6, abs=1e-9)  # clipped, never 0


def test_clip_at_both_ends():
  assert float(mask_schedule.schedule(1.0, 256, "cosine")) == pytest.approx(1e-6)
  assert float(mask_schedule.schedule(0.0, 256, "log")) == 1.0  # -log2(0)=inf


@pytest.mark.parametrize("bad", ["linear", "Cosine", "pow", "powx", "", "cos"])
def test_unknown_method_raises(bad):
  with pytest.raises(ValueError, match="mask schedule"):
    mask_schedule.schedule(0.5, 256, bad)
