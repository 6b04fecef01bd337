"""A 2-d convolution as XLA's or as matrix products (faster on XLA:CPU).

Used by the FID Inception network (`inception.Conv2dBN`).
"""
from typing import Any

import jax
import jax.numpy as jnp

Array = Any

CONV_IMPLS = ("auto", "xla", "matmul")
# Below this many inputs per kernel row (kw * in) a matrix product is too
# thin to beat the convolution: the 3-channel first layer stays a conv.
_MIN_MATMUL_DEPTH = 16


def conv_impl_for_backend(impl: str) -> str:
  """'auto' -> 'matmul' on CPU, 'xla' elsewhere; the others unchanged."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return impl


def conv2d(x: Array, kernel: Array, strides: int, padding: tuple[int, int],
           impl: str, precision: Any = jax.lax.Precision.HIGHEST) -> Array:
  """`[b, H, W, in]` conv `[kh, kw, in, out]` -> `[b, H', W', out]`.

  No dilation; `padding` is (rows, columns) of zeros on each side.
  `impl="xla"` is `lax.conv_general_dilated`. `impl="matmul"` computes the
  same sums as matrix products, one per kernel row: the `kw` shifted windows
  of the input side by side, `[b, H', W', kw * in]`, times that row of the
  kernel, `[kw * in, out]`, summed over the rows (a 1x1 kernel is a single
  product). XLA:CPU runs the network so 1.2-1.8x faster than with its
  convolutions (`benchmarks/inception_throughput.py`); the features differ
  by float32 rounding only (< 1e-5). The working memory is one kernel row's
  windows, `kw` times the layer's input.
  """
  ph, pw = padding
  kh, kw, cin, cout = kernel.shape
  if impl == "xla" or kw * cin < _MIN_MATMUL_DEPTH:
    return jax.lax.conv_general_dilated(
        x, kernel, (strides, strides), ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  ho = (x.shape[1] - kh) // strides + 1
  wo = (x.shape[2] - kw) // strides + 1
  y = None
  for i in range(kh):
    windows = [x[:, i:i + (ho - 1) * strides + 1:strides,
                 j:j + (wo - 1) * strides + 1:strides, :] for j in range(kw)]
    cols = windows[0] if kw == 1 else jnp.concatenate(windows, axis=-1)
    part = jnp.einsum("bhwk,ko->bhwo", cols, kernel[i].reshape(-1, cout),
                      precision=precision)
    y = part if y is None else y + part
  return y
