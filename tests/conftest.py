"""Test set-up, before JAX starts: 8 simulated CPU devices and XLA:CPU code
generation at optimisation level 0 (below)."""
import os

# XLA:CPU's LLVM backend at optimisation level 0 unless MASKGIT_TEST_XLA_OPT
# names another level ("default": XLA's own). The suite's time goes to
# compiling many small programs, not to running them: level 0 compiles the
# tiny tokenizer's init 12x faster (8 s against 101 s here) and runs
# tests/test_halton.py in 0.33x the time. Matrix products and convolutions
# are library calls either way; the elementwise code differs only in float
# rounding (the whole suite passes at both levels).
# Subprocesses that tests start inherit the flag.
_OPT = os.environ.get("MASKGIT_TEST_XLA_OPT", "0")
_FLAGS = os.environ.get("XLA_FLAGS", "")
if _OPT != "default" and "xla_backend_optimization_level" not in _FLAGS:
  if _OPT not in ("0", "1", "2", "3"):
    raise SystemExit(f"error: MASKGIT_TEST_XLA_OPT={_OPT!r}: expected an "
                     "optimisation level (0-3) or 'default'")
  _FLAGS += f" --xla_backend_optimization_level={_OPT}"
  # At level 0, XLA:CPU's older LLVM IR emitters compile the same programs
  # in about 0.65x the CPU time of its MLIR fusion emitters (tests/
  # test_remat.py: user 31.6 s against 49.1 s on a 2-core Zen 3 EPYC). At
  # XLA's own level it is the other way round (benchmarks/train_step.py:
  # 437 s against 159 s), so the library keeps XLA's default.
  if _OPT == "0" and "xla_cpu_use_fusion_emitters" not in _FLAGS:
    _FLAGS += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = (
    _FLAGS + " --xla_force_host_platform_device_count=8").strip()
# For subprocesses that run as a user would, on JAX's one CPU device (or the
# count their config asks for): the same code generation, no simulated devices.
SUBPROCESS_XLA_FLAGS = " ".join(
    f for f in _FLAGS.split() if "xla_force_host_platform_device_count" not in f)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No Python tracebacks in the compiled programs' source locations (JAX's
# default keeps up to 100 frames per operation): lowering a Flax module to
# MLIR and compiling it spends part of its time on them, and no test reads
# them. tests/test_train.py's end-to-end and resume tests: user 66 s against
# 72-80 s. Subprocesses inherit it; the library keeps JAX's default (its
# profiles and error messages name the source lines).
os.environ.setdefault("JAX_TRACEBACK_IN_LOCATIONS_LIMIT", "0")

import pathlib  # noqa: E402

import pytest  # noqa: E402

DATA_DIR = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def data_dir():
  return DATA_DIR
