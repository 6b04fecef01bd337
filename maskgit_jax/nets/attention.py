"""The fast precision mode's products: bfloat16 inputs, float32 accumulation.

`dot_general(dtype)` is what the transformer's dense layers multiply with
(None, the default, in float32), and `low_precision_attention` its
attention in that mode (`maskgit_transformer.Attention`). Their gradient
products take bfloat16 inputs too (`_low_precision_backward_dot`); on a
CPU, the attention's keep jax's automatic backward. `fused_attention` is
the `attention_impl="fused"` form (cuDNN's flash attention on a GPU).
"""

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _f32_accumulating_dot_general(lhs, rhs, dimension_numbers, precision=None,
                                  preferred_element_type=None,
                                  float32_result=True, **kwargs):
  del preferred_element_type
  batched = dimension_numbers[1] != ((), ())
  cpu = jax.default_backend() == "cpu"
  if kwargs or (batched and cpu):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers,
                               precision=precision,
                               preferred_element_type=jnp.float32, **kwargs)
  result = (np.dtype(jnp.float32) if float32_result or cpu or batched
            else np.dtype(jnp.promote_types(lhs.dtype, rhs.dtype)))
  return _low_precision_backward_dot(lhs, rhs, dimension_numbers, precision,
                                     result)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _low_precision_backward_dot(lhs, rhs, dimension_numbers, precision,
                                result=np.dtype(np.float32)):
  """`lhs . rhs` accumulated in float32 and returned as `result` (float32,
  or the inputs' dtype: the dense layers' products on an accelerator, see
  `dot_general`), whose backward multiplies in the inputs' precision.

  The forward is the plain float32-accumulating product. Its automatic
  backward multiplies the float32 cotangent with the bfloat16 inputs:
  mixed products, which XLA computes by converting the bfloat16 side to
  float32 (on an H200, TF32 at about 60% of the bf16 rate; two thirds of a
  train step's FLOPs). Here the cotangent is rounded to the inputs' dtype
  first, as mixed precision training does, and both gradient products take
  bfloat16 inputs and give a bfloat16 result, accumulated in float32 by the
  matrix units (the ImageNet-256 stage-2 step at batch 256 on an H200:
  0.506 -> 0.339 s).

  On a CPU the gradient products give a float32 result, rounded after, as
  matrix products of the operands flattened to 2-D: XLA:CPU runs products
  with a bfloat16 result about 4x slower (2048^2 on an AMX Xeon: 224
  against 990 GFLOP/s). Batched products (the attention's) keep the
  automatic backward there: with a float32 result XLA:CPU fails at run time
  on some of them (jax 0.10: "Unsupported element type for
  DotThunk::Execute: BF16 x BF16 = F32").
  """
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=result)


def _low_precision_backward_dot_fwd(lhs, rhs, dimension_numbers, precision,
                                    result):
  return (_low_precision_backward_dot(lhs, rhs, dimension_numbers, precision,
                                      result), (lhs, rhs))


def _low_precision_backward_dot_bwd(dimension_numbers, precision, result,
                                    residuals, cotangent):
  del result  # the cotangent is rounded to the inputs' dtype either way
  lhs, rhs = residuals
  low = jnp.promote_types(lhs.dtype, rhs.dtype)
  if jax.default_backend() == "cpu":
    return _matrix_gradients(lhs, rhs, dimension_numbers, precision,
                             cotangent.astype(low))
  # The transpose of the product with a `low` result is the pair of
  # gradient products, in `low`. (Its forward product is dead code.)
  _, pullback = jax.vjp(
      lambda a, b: jax.lax.dot_general(a, b, dimension_numbers,
                                       precision=precision,
                                       preferred_element_type=low),
      lhs, rhs)
  return pullback(cotangent.astype(low))


def _matrix_gradients(lhs, rhs, dimension_numbers, precision, cotangent):
  """The two gradients of an unbatched `dot_general(lhs, rhs, dims)` as
  products of 2-D matrices with a float32 result, rounded to the operands'
  dtypes: `lhs` as `[kept, contracted]` (A), `rhs` as `[contracted, kept]`
  (B), the cotangent as `[lhs kept, rhs kept]` (G): dA = G B^T, dB = A^T G.
  """
  (lc, rc), _ = dimension_numbers
  lk = [i for i in range(lhs.ndim) if i not in lc]
  rk = [i for i in range(rhs.ndim) if i not in rc]
  lhs_order, rhs_order = lk + list(lc), list(rc) + rk
  a = lhs.transpose(lhs_order)
  b = rhs.transpose(rhs_order)
  m = int(np.prod([lhs.shape[i] for i in lk]))
  n = int(np.prod([rhs.shape[i] for i in rk]))
  k = int(np.prod([lhs.shape[i] for i in lc]))
  a2, b2, g = a.reshape(m, k), b.reshape(k, n), cotangent.reshape(m, n)
  da = jax.lax.dot_general(g, b2, (((1,), (1,)), ((), ())),
                           precision=precision,
                           preferred_element_type=jnp.float32)
  db = jax.lax.dot_general(a2, g, (((0,), (0,)), ((), ())),
                           precision=precision,
                           preferred_element_type=jnp.float32)
  da = da.reshape(a.shape).transpose(np.argsort(lhs_order))
  db = db.reshape(b.shape).transpose(np.argsort(rhs_order))
  return da.astype(lhs.dtype), db.astype(rhs.dtype)


_low_precision_backward_dot.defvjp(_low_precision_backward_dot_fwd,
                                   _low_precision_backward_dot_bwd)


def dot_general(dtype, float32_result: bool = False
                ) -> Optional[Callable[..., jax.Array]]:
  """Float32 accumulation for low-precision matmuls; the default (None)
  in float32.

  The result: on an accelerator, in `dtype` (bfloat16), rounded once from
  the matrix units' float32 accumulator, as mixed-precision training does:
  a float32 result there is converted back to bfloat16 by the next layer
  (on the H200 the converts were a quarter of the bf16 sampler forward's
  device time, 4.6 of 18.3 ms). On a CPU, float32 (XLA:CPU's products with
  a bfloat16 result run about 4x slower). `float32_result=True` (the output
  layer's logits) keeps float32 everywhere."""
  if dtype == jnp.float32:
    return None
  if float32_result:
    return _f32_accumulating_dot_general
  return functools.partial(_f32_accumulating_dot_general,
                           float32_result=False)


def low_precision_attention(query, key, value, mask=None, dropout_rng=None,
                            dropout_rate=0., broadcast_dropout=True,
                            deterministic=False, dtype=None, precision=None,
                            module=None, loop_examples=False):
  """`nn.dot_product_attention` for the fast precision mode.

  Both products take the low-precision `query`, `key`, `value` and
  accumulate in float32; the attention logits, softmax and dropout stay
  float32, and the probabilities are cast to `value.dtype` for the value
  product. Returns float32 `[..., q_length, heads, depth]`.

  With `loop_examples` (the transformer sets it at inference), on a CPU,
  without dropout, mask or sown weights, the batch is attended in a loop
  over pairs of examples, each head's two products as plain matrix
  products (the same result to the bit; `_attend_per_head`). At 16x16
  tokens and batch 8 a loop over examples made the sampler's attention
  about 3x faster on a 2-core CPU, where it was half the time of a bfloat16
  forward; the heads as separate matrix products another 1.5x (one layer of
  the ImageNet-256 transformer at batch 2 and 8,
  `benchmarks/attention_forms.py`). Training keeps the batched form: in the
  data-parallel train step the loop over a sharded batch became while
  loops with all-gathers of the batch (`profile_step.py`). (Flax passes
  `deterministic=True` whenever the dropout rate is 0, so that flag cannot
  tell training from inference.)
  """
  query, key, value = nn.dtypes.promote_dtype(query, key, value, dtype=dtype)
  dropout = not deterministic and dropout_rate > 0.
  if (loop_examples and query.ndim == 4 and mask is None and not dropout
      and module is None and jax.default_backend() == "cpu"):
    return _attend_per_head(query, key, value, precision=precision)
  return _low_precision_attention(
      query, key, value, mask=mask, dropout_rng=dropout_rng,
      dropout_rate=dropout_rate if dropout else 0.,
      broadcast_dropout=broadcast_dropout, precision=precision, module=module)


# Examples attended together in one step of `_attend_per_head`'s loop: with
# two, the two cores of a small CPU each take one (one ImageNet-256 layer in
# bf16 on a 2-core AMD EPYC, batch 2: 4.0 against 5.1 ms a layer with one
# example a step; batch 8: 15.8 against 14.7, about the same).
_EXAMPLES_PER_STEP = 2


def _attend_per_head(query, key, value, precision=None):
  """`_low_precision_attention` without mask or dropout, computed as a loop
  (`lax.map`) over groups of examples, each head's logits and value product
  a 2-D matrix product, unrolled: XLA:CPU runs those about 1.5x as fast as
  the product batched over the heads (one layer of the ImageNet-256
  transformer in bfloat16, batch 2: 3.7 against 5.5 ms). The same result
  up to float32 rounding: to the bit on the AMD EPYC and at small sizes; at
  the ImageNet-256 shapes on an AMX Xeon 0.2% of the outputs differ, by at
  most 2e-7 of their scale (`benchmarks/attention_forms.py`).
  `[b, q, h, d]` (and `[b, k, h, d]`) -> float32 `[b, q, h, d]`.
  """
  batch, _, heads, depth = query.shape
  group = _EXAMPLES_PER_STEP if batch % _EXAMPLES_PER_STEP == 0 else 1
  query = query / jnp.sqrt(depth).astype(query.dtype)

  def head(q, k, v):  # [q, d], [k, d], [k, d]
    logits = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())),
                                 precision=precision,
                                 preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits).astype(v.dtype)
    return jax.lax.dot_general(weights, v, (((1,), (0,)), ((), ())),
                               precision=precision,
                               preferred_element_type=jnp.float32)

  def examples(qkv):  # each [group, length, heads, depth]
    q, k, v = qkv
    return jnp.stack([
        jnp.stack([head(q[e, :, h], k[e, :, h], v[e, :, h])
                   for h in range(heads)], axis=1)
        for e in range(group)])

  grouped = [t.reshape((batch // group, group) + t.shape[1:])
             for t in (query, key, value)]
  out = jax.lax.map(examples, tuple(grouped))
  return out.reshape((batch,) + out.shape[2:])


def _low_precision_attention(query, key, value, mask=None, dropout_rng=None,
                             dropout_rate=0., broadcast_dropout=True,
                             precision=None, module=None):
  query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
  logits = _products("...qhd,...khd->...hqk", query, key, precision)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits)
  if module:
    module.sow("intermediates", "attention_weights", weights)
  if dropout_rate > 0.:
    keep_prob = 1.0 - dropout_rate
    shape = ((1,) * (key.ndim - 2) + weights.shape[-2:] if broadcast_dropout
             else weights.shape)
    keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)
    weights = weights * (keep.astype(weights.dtype) / keep_prob)
  return _products("...hqk,...khd->...qhd", weights.astype(value.dtype),
                   value, precision)


# The attention's two products on `[batch, length, heads, depth]` arrays as
# dot_generals (batch and heads the batch dimensions), so that they take the
# low-precision backward of the dense layers.
_PRODUCTS = {"...qhd,...khd->...hqk": ((((3,), (3,)), ((0, 2), (0, 2))),
                                       None),
             "...hqk,...khd->...qhd": ((((3,), (1,)), ((0, 1), (0, 2))),
                                       (0, 2, 1, 3))}


def _products(spec, a, b, precision):
  """`jnp.einsum(spec, a, b)` accumulated in float32; with low-precision
  4-D inputs on an accelerator through `_low_precision_backward_dot`."""
  if (a.ndim != 4 or a.dtype == jnp.float32 or
      jax.default_backend() == "cpu"):
    return jnp.einsum(spec, a, b, precision=precision,
                      preferred_element_type=jnp.float32)
  dims, permutation = _PRODUCTS[spec]
  out = _low_precision_backward_dot(a, b, dims, precision,
                                    np.dtype(jnp.float32))
  return out if permutation is None else out.transpose(permutation)


ATTENTION_IMPLS = ("default", "fused")


def fused_attention(query, key, value, mask=None, dropout_rng=None,
                    dropout_rate=0., broadcast_dropout=True,
                    deterministic=False, dtype=None, precision=None,
                    module=None, valid_length=None):
  """`jax.nn.dot_product_attention` as a flax `attention_fn`: on an NVIDIA
  GPU with bfloat16 (or float16) inputs, cuDNN's fused (flash) attention,
  which never writes the `[batch, heads, q, k]` weights out; elsewhere
  XLA's composition of the same products. `[b, l, h, d]` -> `[b, l, h, d]`.

  No attention dropout, mask or sown weights: the transformer's
  `attention_impl="fused"` needs `attention_probs_dropout_prob=0`
  (the factory says so in one line; here a ValueError). `valid_length`
  (an int, the transformer's when it padded the sequence, see
  `fused_padding`): only the first `valid_length` positions are real."""
  del dropout_rng, broadcast_dropout, precision
  if not deterministic and dropout_rate > 0.:
    raise ValueError(
        f"fused attention has no attention dropout (rate {dropout_rate}); "
        "set attention_probs_dropout_prob=0 or attention_impl='default'")
  if mask is not None or module is not None:
    raise ValueError("fused attention takes no mask and sows no weights")
  query, key, value = nn.dtypes.promote_dtype(query, key, value, dtype=dtype)
  impl = fused_implementation(query.dtype)
  if valid_length is not None and valid_length < query.shape[1]:
    # Padded by the transformer (`fused_padding`): keys past valid_length
    # are masked, the padded queries' rows are dropped by the caller.
    lengths = jnp.full((query.shape[0],), valid_length, jnp.int32)
    return jax.nn.dot_product_attention(
        query, key, value, query_seq_lengths=lengths,
        key_value_seq_lengths=lengths, implementation=impl)
  if impl == "cudnn" and query.shape[1] % 2:
    return even_length_attention(query, key, value, impl)
  return jax.nn.dot_product_attention(query, key, value, implementation=impl)


def fused_implementation(dtype) -> str:
  """jax.nn.dot_product_attention's implementation for `fused_attention`:
  "cudnn" on an NVIDIA GPU with bfloat16 / float16 inputs, else "xla"."""
  return ("cudnn" if jax.default_backend() == "gpu" and
          jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla")


def fused_padding(length: int, dtype) -> int:
  """Positions the transformer appends once, before its first layer, so
  that cuDNN's fused attention sees an even length in every layer (0 or 1).
  Padding there instead of in each layer (`even_length_attention`) saves
  the pad and slice copies of q, k, v and the output in every layer: 10%
  of the bf16 sampler's forward on the H200 (1.9 of 18.5 ms)."""
  return int(fused_implementation(dtype) == "cudnn" and length % 2)


def even_length_attention(query, key, value, implementation):
  """`jax.nn.dot_product_attention` of an odd-length sequence (MaskGIT's
  class token and latent**2 image tokens: 257 at ImageNet-256) padded by
  one position, the padded key masked by the sequence lengths and the
  padded query's row dropped. cuDNN's flash attention refuses odd lengths
  in training (jax 0.11.2: "Unsupported sequence length Q 257, KV 257").
  `[b, l, h, d]` -> `[b, l, h, d]`, the same values."""
  batch, length = query.shape[:2]
  pad = [(0, 0), (0, 1), (0, 0), (0, 0)]
  lengths = jnp.full((batch,), length, jnp.int32)
  out = jax.nn.dot_product_attention(
      *(jnp.pad(t, pad) for t in (query, key, value)),
      query_seq_lengths=lengths, key_value_seq_lengths=lengths,
      implementation=implementation)
  return out[:, :length]
