"""The entry points re-execute themselves with tcmalloc preloaded."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

from maskgit_jax.common import allocator

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIB = "libtcmalloc_minimal.so.4"


def test_environment_decisions():
  env = allocator.reexec_environment({"PATH": "/bin"}, LIB)
  assert env["LD_PRELOAD"] == LIB and env["PATH"] == "/bin"
  assert env[allocator.ENV] == "tcmalloc"  # marks it done: no second exec
  assert allocator.reexec_environment(env, LIB) is None
  # An existing preload is kept, after ours.
  env = allocator.reexec_environment({"LD_PRELOAD": "libfoo.so"}, LIB)
  assert env["LD_PRELOAD"] == f"{LIB} libfoo.so"
  # Left alone: asked for glibc, not installed, or another allocator chosen.
  assert allocator.reexec_environment({allocator.ENV: "system"}, LIB) is None
  assert allocator.reexec_environment({}, None) is None
  for preload in ("/x/libjemalloc.so.2", "libtcmalloc.so.4"):
    assert allocator.reexec_environment({"LD_PRELOAD": preload}, LIB) is None
  with pytest.raises(SystemExit, match=r"MASKGIT_JAX_ALLOCATOR=fast"):
    allocator.reexec_environment({allocator.ENV: "fast"}, LIB)


_PROBE = ("from maskgit_jax.common import allocator; allocator.maybe_reexec(); "
          "print(any('tcmalloc' in l for l in open('/proc/self/maps')))")


def _probe(**extra):
  env = dict(os.environ)
  env.pop(allocator.ENV, None)
  env.pop("LD_PRELOAD", None)
  env.update(extra)
  return subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(allocator.find_library() is None,
                    reason="libtcmalloc-minimal4 is not installed")
def test_reexec_loads_tcmalloc():
  result = _probe()
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "True"
  result = _probe(**{allocator.ENV: "system"})
  assert result.stdout.strip() == "False"


def test_entry_point_bad_choice_is_one_line():
  env = dict(os.environ, **{allocator.ENV: "fast"})
  result = subprocess.run(
      [sys.executable, "-m", "maskgit_jax.train", "--config=x.py",
       "--workdir=/nonexistent"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=120)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      "error: MASKGIT_JAX_ALLOCATOR=fast: expected 'system' (glibc malloc) "
      "or unset (tcmalloc when installed)"]


@pytest.mark.skipif(allocator.find_library() is None,
                    reason="libtcmalloc-minimal4 is not installed")
@pytest.mark.parametrize("module", ["train", "sample", "evaluate", "export"])
def test_entry_points_reexec_before_importing_jax(module):
  """The first process re-executes before its imports (2-3 s on 2 cores):
  under `-X importtime` (kept by the re-execution) only the second process
  lists jax."""
  env = dict(os.environ)
  env.pop(allocator.ENV, None)
  env.pop("LD_PRELOAD", None)
  result = subprocess.run(
      [sys.executable, "-X", "importtime", "-m", f"maskgit_jax.{module}",
       "--nonexistent_flag"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=120)
  lines = result.stderr.splitlines()
  allocators = [l for l in lines
                if re.search(r"\|\s+maskgit_jax\.common\.allocator$", l)]
  jax_imports = [l for l in lines if re.search(r"\|\s+jax$", l)]
  assert len(allocators) == 2, result.stderr[-2000:]  # both processes
  assert len(jax_imports) == 1, result.stderr[-2000:]  # the second only
