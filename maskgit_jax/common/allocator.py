"""The entry points' memory allocator: tcmalloc when it is installed.

XLA:CPU gives each run of a compiled program its temporary buffers with
`malloc`/`free`. glibc serves every request above its mmap threshold (at most
32 MiB) with a fresh `mmap` and returns it with `munmap` on free, and its
per-thread arenas delete whole 64 MiB heaps once they empty. So each train
step maps its large temporaries anew and the kernel zero-fills them page by
page on first touch: the embedded default's stage-2 step took ~55,000 page
faults, a quarter of its time in the kernel (`/usr/bin/time`, 60 steps of
`benchmarks/train_step.py`: sys 6.8 s of 38.8 s user). tcmalloc keeps freed
spans for reuse. With `libtcmalloc_minimal.so.4` preloaded (Debian
`libtcmalloc-minimal4`, which `make setup` installs) the same step ran
1.32x faster (115.5 ms against 151.9 ms, page faults 270k against 3.65M
over the run); stage 1's smaller buffers gained nothing measurable. jemalloc
(its default decay) did not help, nor did glibc's tunables short of one
arena with mmap off (1.13x).

A preload only takes effect when the process starts, so `maybe_reexec()`
executes the same command again with the library in LD_PRELOAD. The entry
points call it first thing, before their other imports (which take 2-3 s
on a 2-core machine, and would be paid twice: an error line of `python -m
maskgit_jax.train` took 5.2 s when the call came after them, 2.2 s now);
`cli.run` calls it again for any other caller, before any JAX backend
starts. It does nothing when:
  * MASKGIT_JAX_ALLOCATOR=system (or the library is not installed);
  * LD_PRELOAD already names a tcmalloc or jemalloc;
  * it already re-executed (MASKGIT_JAX_ALLOCATOR=tcmalloc is set then).
"""

import ctypes.util
import os
import sys
from typing import Mapping, Optional

ENV = "MASKGIT_JAX_ALLOCATOR"
LIBRARY = "tcmalloc_minimal"
# tcmalloc reports every allocation above 1 GiB on stderr; large models on
# big hosts make those routinely.
_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def find_library() -> Optional[str]:
  """The tcmalloc soname the dynamic loader knows, or None."""
  if not sys.platform.startswith("linux"):
    return None
  return ctypes.util.find_library(LIBRARY)


def reexec_environment(environ: Mapping[str, str],
                       library: Optional[str]) -> Optional[dict]:
  """The environment to re-execute with, or None to carry on as is."""
  choice = environ.get(ENV, "")
  if choice == "system" or choice == "tcmalloc" or library is None:
    return None
  if choice:
    raise SystemExit(f"error: {ENV}={choice}: expected 'system' "
                     "(glibc malloc) or unset (tcmalloc when installed)")
  preload = environ.get("LD_PRELOAD", "")
  if "tcmalloc" in preload or "jemalloc" in preload:
    return None
  env = dict(environ)
  env["LD_PRELOAD"] = f"{library} {preload}".strip()
  env[ENV] = "tcmalloc"
  for key, value in _QUIET.items():
    env.setdefault(key, value)
  return env


_DECIDED = False  # this process carries on as it is (no second lookup)


def maybe_reexec() -> None:
  """Re-executes this command (`sys.orig_argv`) with tcmalloc preloaded;
  returns only when it does not (see the module docstring)."""
  global _DECIDED
  if _DECIDED or os.environ.get(ENV) in ("system", "tcmalloc"):
    return  # decided already: no library lookup (it runs ldconfig)
  env = reexec_environment(os.environ, find_library())
  argv = getattr(sys, "orig_argv", [])
  if env is None or not argv:
    _DECIDED = True  # the entry points' early call, then `cli.run`'s
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable] + argv[1:], env)
  except OSError:
    _DECIDED = True  # carry on with glibc's malloc


def current() -> str:
  """The allocator this process runs with, for benchmark records."""
  preload = os.environ.get("LD_PRELOAD", "")
  for name in ("tcmalloc", "jemalloc"):
    if name in preload:
      return name
  return "glibc"
