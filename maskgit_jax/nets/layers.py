"""Small shared layers: activations, resampling, l2 normalisation, remat."""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_ACTIVATIONS = {"swish": nn.swish, "relu": nn.relu, "gelu": nn.gelu}
ACTIVATIONS = tuple(_ACTIVATIONS)


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Returns the activation function called `name` (swish, relu, gelu)."""
  try:
    return _ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"Unknown activation {name!r}; expected one of "
                     f"{sorted(_ACTIVATIONS)}.") from None


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, 'SAME' padding, padding cells excluded.

  This is TensorFlow's average pooling (the release's `dsample`): at an odd
  border the mean is over the cells that exist. `[b, h, w, c]` ->
  `[b, ceil(h/2), ceil(w/2), c]`.
  """
  window, strides = (1, 2, 2, 1), (1, 2, 2, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "SAME")
  _, h, w, _ = x.shape
  if h % 2 == 0 and w % 2 == 0:
    return total / 4.0
  # Cells per window at an odd border (computed on the host: a constant).
  ones = np.ones((h + h % 2, w + w % 2), np.float32)
  ones[h:, :] = 0
  ones[:, w:] = 0
  count = ones.reshape(ones.shape[0] // 2, 2, ones.shape[1] // 2, 2).sum((1, 3))
  return total / jnp.asarray(count, x.dtype)[None, :, :, None]


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling. `[b, h, w, c]` -> `[b, h*f, w*f, c]`."""
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h * factor, w * factor, c), method="nearest")


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """Scales `x` to unit L2 norm along `axis`."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps)


REMAT_POLICIES = ("none", "minimal", "full")


def check_remat_policy(policy: str, key: str = "remat policy") -> None:
  """Raises a one-line ValueError naming `key` unless `policy` is one of
  REMAT_POLICIES."""
  if policy not in REMAT_POLICIES:
    raise ValueError(f"{key}={policy!r} is not one of {list(REMAT_POLICIES)}.")


def remat(module_class, policy: str, static_argnums=(), prevent_cse=True):
  """`module_class`, rematerialised in the backward pass by `policy`.

  - "none": unchanged (every activation autodiff needs is kept);
  - "minimal": keeps the outputs of matmuls without batch dimensions (the
    dense projections) and recomputes the rest (attention, norms,
    activations) from them;
  - "full": keeps only the block's inputs and recomputes the whole block.

  Variables, their names and the function are those of `module_class`; give
  each instance an explicit `name` (flax would otherwise prefix
  "Checkpoint"). `static_argnums` counts `self` as 0, as `nn.remat` does;
  `prevent_cse=False` inside `nn.scan`, which needs no CSE barrier.
  """
  check_remat_policy(policy)
  if policy == "none":
    return module_class
  saveable = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable
              if policy == "minimal" else None)
  return nn.remat(module_class, policy=saveable, static_argnums=static_argnums,
                  prevent_cse=prevent_cse)


GROUP_NORMS = ("reduce", "matmul")


class GroupNorm(nn.Module):
  """Group normalisation with `flax.linen.GroupNorm`'s variables (`scale`,
  `bias` `[c]`), epsilon (1e-6) and statistics (float32, the variance as
  E[x^2] - E[x]^2), whose per-channel sums are matrix-vector products with a
  vector of ones instead of reductions.

  XLA:CPU runs the reductions over a `[b, h, w, c]` block of a few channels
  slowly: in the embedded default's stage-1 step (16-64 channels, 7-28
  pixels a side) the GroupNorm statistics took ~10% of the operation time,
  and this form made the step ~6% faster (`benchmarks/train_step.py`,
  README "Speed and cost"). Equal to flax's to float rounding (tested), not
  to the bit: the released checkpoints keep flax's ("reduce").

  `[b, ..., c]` -> `[b, ..., c]` in `dtype` (None: the input's promoted with
  float32, as flax's).
  """
  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f"GroupNorm: {c} channels are not divisible into "
                       f"{self.num_groups} groups.")
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    per_group = c // self.num_groups
    flat = x.astype(jnp.float32).reshape(x.shape[0], -1, c)  # [b, p, c]
    ones = jnp.ones((flat.shape[1],), jnp.float32)
    sums = jnp.einsum("bpc,p->bc", flat, ones)
    squares = jnp.einsum("bpc,p->bc", jnp.square(flat), ones)
    count = flat.shape[1] * per_group
    mean = sums.reshape(-1, self.num_groups, per_group).sum(-1) / count
    mean_sq = squares.reshape(-1, self.num_groups, per_group).sum(-1) / count
    var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
    inv = jnp.repeat(jax.lax.rsqrt(var + self.epsilon), per_group, -1) * scale
    shift = bias - jnp.repeat(mean, per_group, -1) * inv  # [b, c]
    y = flat * inv[:, None, :] + shift[:, None, :]
    dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
    return y.reshape(x.shape).astype(dtype)


def group_norm(kind: str, num_groups: int, dtype: Any) -> nn.Module:
  """A GroupNorm of `kind` ("reduce": `flax.linen.GroupNorm`, the release's;
  "matmul": `GroupNorm` above); both named `GroupNorm_<i>` in their parent,
  with the same variables."""
  if kind == "reduce":
    return nn.GroupNorm(num_groups=num_groups, dtype=dtype)
  if kind == "matmul":
    return GroupNorm(num_groups=num_groups, dtype=dtype)
  raise ValueError(f"group_norm={kind!r}: expected one of {GROUP_NORMS}.")


class SpatialSelfAttention(nn.Module):
  """Single-head self-attention over the positions of a feature map, added
  to its input (the taming VQGAN's attention block; not in the release's
  tokenizer): `[b, h, w, c]` -> `[b, h, w, c]`."""
  num_groups: int
  dtype: Any = jnp.float32
  group_norm: str = "reduce"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    y = group_norm(self.group_norm, self.num_groups, self.dtype)(x)
    q, k, v = (nn.Dense(c, dtype=self.dtype, name=name)(y).reshape(b, h * w, c)
               for name in ("query", "key", "value"))
    logits = jnp.einsum("bqc,bkc->bqk", q, k) / np.sqrt(c).astype(q.dtype)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    out = jnp.einsum("bqk,bkc->bqc", weights.astype(v.dtype), v)
    return x + nn.Dense(c, dtype=self.dtype, name="out")(
        out.reshape(b, h, w, c))
