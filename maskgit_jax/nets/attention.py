"""The fast precision mode's products: bfloat16 inputs, float32 accumulation.

`dot_general(dtype)` is what the transformer's dense layers multiply with
(None, the default, in float32), and `low_precision_attention` its
attention in that mode (`maskgit_transformer.Attention`).
"""

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def _f32_accumulating_dot_general(lhs, rhs, dimension_numbers, precision=None,
                                  preferred_element_type=None, **kwargs):
  del preferred_element_type
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=jnp.float32, **kwargs)


def dot_general(dtype) -> Optional[Callable[..., jax.Array]]:
  """Float32 accumulation for low-precision matmuls; the default otherwise."""
  return None if dtype == jnp.float32 else _f32_accumulating_dot_general


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
  without dropout, mask or sown weights, the batch is attended one example
  at a time (`lax.map`; the same result): one example's logits of all
  heads stay in cache. At 16x16 tokens and batch 8 that makes the
  sampler's attention about 3x faster on a 2-core CPU, where it was half
  the time of a bfloat16 forward. Training keeps the batched form: in the
  data-parallel train step the loop over a sharded batch became while
  loops with all-gathers of the batch (`profile_step.py`). (Flax passes
  `deterministic=True` whenever the dropout rate is 0, so that flag cannot
  tell training from inference.)
  """
  query, key, value = nn.dtypes.promote_dtype(query, key, value, dtype=dtype)
  dropout = not deterministic and dropout_rate > 0.
  if (loop_examples and query.ndim == 4 and mask is None and not dropout
      and module is None and jax.default_backend() == "cpu"):
    return jax.lax.map(
        lambda qkv: _low_precision_attention(*qkv, precision=precision),
        (query, key, value))
  return _low_precision_attention(
      query, key, value, mask=mask, dropout_rng=dropout_rng,
      dropout_rate=dropout_rate if dropout else 0.,
      broadcast_dropout=broadcast_dropout, precision=precision, module=module)


def _low_precision_attention(query, key, value, mask=None, dropout_rng=None,
                             dropout_rate=0., broadcast_dropout=True,
                             precision=None, module=None):
  query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
  logits = jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision,
                      preferred_element_type=jnp.float32)
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
  return jnp.einsum("...hqk,...khd->...qhd", weights.astype(value.dtype),
                    value, precision=precision,
                    preferred_element_type=jnp.float32)
