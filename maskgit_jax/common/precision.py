"""`config.transformer.dtype="auto"`: bfloat16 compute where it is faster.

The fast precision mode (bfloat16 matrix products, float32 parameters and
accumulation) pays off where the hardware multiplies bfloat16 natively: GPUs,
TPUs, and CPUs with bfloat16 dot-product instructions (x86 AVX512_BF16 or
AMX-BF16, Arm BF16). Elsewhere XLA:CPU converts the bfloat16 inputs back to
float32 for every product, and the same step runs slower than in float32
(the demo's stage-2 step on a 2-core AVX2 AMD EPYC: README "Speed and
cost"). "auto" picks bfloat16 where it is fast and float32 elsewhere; the
weights are float32 either way, so a run resumes, samples and evaluates on
any machine, each computing in its own choice.
"""

import functools
from typing import Optional, Tuple

import jax

AUTO = "auto"
# /proc/cpuinfo flags of bfloat16 dot products: x86 (`flags`), Arm
# (`Features`).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_bf16_flags(cpuinfo: Optional[str] = None) -> Tuple[str, ...]:
  """The bfloat16 dot-product flags of the first CPU in `cpuinfo` (the text
  of /proc/cpuinfo; read from there when None; () where it is unreadable,
  e.g. not Linux)."""
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:
      return ()
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    if key.strip() in ("flags", "Features"):
      have = set(value.split())
      return tuple(f for f in BF16_FLAGS if f in have)
  return ()


@functools.lru_cache(maxsize=None)
def auto_dtype(platform: Optional[str] = None) -> Tuple[str, str]:
  """("bfloat16" or "float32", why) for `platform` (default: JAX's default
  backend)."""
  platform = platform or jax.default_backend()
  if platform != "cpu":
    return "bfloat16", f"{platform}: native bfloat16 products"
  flags = cpu_bf16_flags()
  if flags:
    return "bfloat16", f"this CPU has {', '.join(flags)}"
  return "float32", ("this CPU has no bfloat16 dot-product instructions "
                     "(avx512_bf16, amx_bf16, bf16), so bfloat16 would be "
                     "slower")


def resolve(name: Optional[str]) -> Optional[str]:
  """`name` with "auto" replaced by `auto_dtype()`'s choice."""
  return auto_dtype()[0] if name == AUTO else name
