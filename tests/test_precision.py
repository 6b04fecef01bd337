"""`transformer.dtype="auto"`: bfloat16 where the hardware multiplies it
natively (common/precision.py), resolved where the model is built."""

import jax.numpy as jnp
import pytest

from maskgit_jax.common import precision
from maskgit_jax.nets import factory

import test_config_fields

AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 avx fma avx2 bmi2
"""
ZEN4 = "flags\t\t: fpu avx avx2 avx512f avx512_bf16 avx512_vnni\n"
XEON_AMX = ("processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 "
            "amx_tile amx_int8\nprocessor\t: 1\nflags\t\t: avx2\n")
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm sve\n"


@pytest.mark.parametrize("text, flags", [
    (AVX2, ()), (ZEN4, ("avx512_bf16",)),
    (XEON_AMX, ("avx512_bf16", "amx_bf16")),  # the first CPU's line
    (ARM, ("bf16",)), ("", ()),
    ("flags\t: avx512bf16_like amx_bf16x\n", ())])  # whole words only
def test_cpu_flags(text, flags):
  assert precision.cpu_bf16_flags(text) == flags


def test_auto_dtype_per_platform(monkeypatch):
  parse = precision.cpu_bf16_flags
  precision.auto_dtype.cache_clear()
  try:
    assert precision.auto_dtype("gpu")[0] == "bfloat16"
    assert precision.auto_dtype("tpu")[0] == "bfloat16"
    for text, want in ((AVX2, "float32"), (ZEN4, "bfloat16"),
                       (ARM, "bfloat16")):
      precision.auto_dtype.cache_clear()
      monkeypatch.setattr(precision, "cpu_bf16_flags",
                          lambda cpuinfo=None, t=text: parse(t))
      name, why = precision.auto_dtype("cpu")
      assert name == want, (text, why)
      assert ("no bfloat16" in why) == (want == "float32"), why
  finally:
    precision.auto_dtype.cache_clear()


def test_auto_resolves_where_the_model_is_built(monkeypatch):
  for name, want in (("float32", "float32"), ("bfloat16", "bfloat16")):
    monkeypatch.setattr(precision, "auto_dtype", lambda p=None, n=name: (
        n, "test"))
    assert factory.parse_dtype("auto") == getattr(jnp, want)
    model = factory.transformer_from_config(test_config_fields.parse(
        "fashion_mnist", "--config.transformer.dtype=auto"))
    assert model.dtype == getattr(jnp, want)
  assert factory.parse_dtype("float32") == jnp.float32
  with pytest.raises(ValueError, match=r"Unknown dtype 'float16'; expected "
                     r"'float32', 'bfloat16' or 'auto'"):
    factory.parse_dtype("float16")
