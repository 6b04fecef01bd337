"""The MaskGIT bidirectional transformer (BERT-style, as released).

Input: token ids int32 `[batch, seq_len]` where position 0 holds the class
token `codebook_size + label` and positions 1.. hold image tokens in
`[0, codebook_size)` or the mask token id -1. Output: logits
`[batch, seq_len, vocab_size]` with `vocab_size = codebook_size + num_classes
+ 1`. The id -1 resolves to the last embedding row (`vocab_size - 1`), as in
the release.

Post-LayerNorm blocks, learned position embeddings, embedding LayerNorm and
dropout, GELU MLPs, and an MLM head (dense, GELU, LayerNorm, product with the
tied word-embedding matrix, its own bias). Module names equal the release's,
so `Transformer.from_preset(256)` has the variable tree of the released
`maskgit_imagenet256_checkpoint`.

Parameters carry logical axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`,
`norm`) for named sharding. With `activation_rules` (logical-to-mesh axis
rules) and a mesh in scope, activations are constrained to
(`activation_batch`, `activation_length`, `activation_embed`); by default
they are not constrained.

Fast precision mode (`dtype=jnp.bfloat16`): every matmul takes bfloat16
inputs and accumulates in float32 (`preferred_element_type`); LayerNorm,
softmax and the logits stay float32. Parameters are always float32.
"""

import functools
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskgit_jax.nets import attention
from maskgit_jax.nets import layer_stack
from maskgit_jax.nets import layers

LAYERNORM_EPSILON = 1e-12  # BERT's.
Dtype = Any

# Released ImageNet models (maskgit/configs/maskgit_class_cond_config.py):
# 24 layers, hidden 768, 16 heads, MLP 3072, 1024 codes, 1000 classes.
IMAGENET = dict(
    codebook_size=1024, num_classes=1000, hidden_size=768,
    num_hidden_layers=24, num_attention_heads=16, intermediate_size=3072,
    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
PRESETS = {
    "imagenet256": dict(IMAGENET, latent_size=16),
    "imagenet512": dict(IMAGENET, latent_size=32),
    # CPU-sized, for 8x8 token grids.
    "small": dict(codebook_size=512, num_classes=10, latent_size=8,
                  hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=512, hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1),
    "tiny": dict(codebook_size=16, num_classes=3, latent_size=4, hidden_size=16,
                 num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0),
}


def truncated_normal(stddev: float) -> Callable[..., jax.Array]:
  """BERT's initializer: normal truncated at two standard deviations."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.truncated_normal(key, -2, 2, shape, dtype) * stddev
  return init


def _partitioned(init, names):
  return nn.with_logical_partitioning(init, names)


class Attention(nn.Module):
  """Self-attention, dropout, residual, post-LayerNorm. `[b, l, d]` -> same."""
  hidden_size: int
  num_attention_heads: int
  attention_probs_dropout_prob: float
  hidden_dropout_prob: float
  initializer_range: float = 0.02
  dtype: Dtype = jnp.float32
  attention_impl: str = "default"
  valid_length: Optional[int] = None  # fused: real positions (the rest pad)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    init = truncated_normal(self.initializer_range)
    zeros = nn.initializers.zeros
    if self.attention_impl == "fused":
      attention_fn = functools.partial(attention.fused_attention,
                                       valid_length=self.valid_length)
    elif self.dtype == jnp.float32:
      attention_fn = nn.dot_product_attention
    else:
      attention_fn = functools.partial(attention.low_precision_attention,
                                       loop_examples=deterministic)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_attention_heads,
        qkv_features=self.hidden_size,
        dropout_rate=self.attention_probs_dropout_prob,
        deterministic=deterministic,
        kernel_init=_partitioned(init, ("embed", "heads", "kv")),
        out_kernel_init=_partitioned(init, ("heads", "kv", "embed")),
        bias_init=_partitioned(zeros, ("heads", "kv")),
        out_bias_init=_partitioned(zeros, ("embed",)),
        dtype=self.dtype,
        attention_fn=attention_fn,
        qkv_dot_general=attention.dot_general(self.dtype),
        out_dot_general=attention.dot_general(self.dtype),
        name="self_attention")(x)
    y = nn.Dropout(rate=self.hidden_dropout_prob)(y, deterministic=deterministic)
    return _layer_norm("attention_output_ln")(y.astype(jnp.float32) + x)


def _constrain(x, rules):
  if rules is None:
    return x
  return nn.with_logical_constraint(
      x, ("activation_batch", "activation_length", "activation_embed"),
      rules=rules)


def _layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=LAYERNORM_EPSILON, dtype=jnp.float32,
      scale_init=_partitioned(nn.initializers.ones, ("norm",)),
      bias_init=_partitioned(nn.initializers.zeros, ("norm",)), name=name)


def _dense(features, names, initializer_range, dtype, name) -> nn.Dense:
  return nn.Dense(
      features=features,
      kernel_init=_partitioned(truncated_normal(initializer_range), names),
      bias_init=_partitioned(nn.initializers.zeros, names[-1:]),
      dtype=dtype, dot_general=attention.dot_general(dtype), name=name)


class Mlp(nn.Module):
  """Dense, GELU, dense, dropout, residual, post-LayerNorm. `[b, l, d]` -> same."""
  hidden_size: int
  intermediate_size: int
  hidden_dropout_prob: float
  initializer_range: float = 0.02
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    h = _dense(self.intermediate_size, ("embed", "mlp"), self.initializer_range,
               self.dtype, "intermediate_output")(x)
    h = jax.nn.gelu(h)
    h = _dense(self.hidden_size, ("mlp", "embed"), self.initializer_range,
               self.dtype, "layer_output")(h)
    h = nn.Dropout(rate=self.hidden_dropout_prob)(h, deterministic=deterministic)
    return _layer_norm("layer_output_ln")(h.astype(jnp.float32) + x)


class TransformerLayer(nn.Module):
  """One post-LN block: Attention then Mlp. `[b, l, d]` -> same."""
  hidden_size: int
  num_attention_heads: int
  intermediate_size: int
  hidden_dropout_prob: float
  attention_probs_dropout_prob: float
  initializer_range: float = 0.02
  dtype: Dtype = jnp.float32
  activation_rules: Optional[Tuple[Tuple[str, Any], ...]] = None
  attention_impl: str = "default"
  valid_length: Optional[int] = None  # see Attention

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    x = Attention(
        hidden_size=self.hidden_size,
        num_attention_heads=self.num_attention_heads,
        attention_probs_dropout_prob=self.attention_probs_dropout_prob,
        hidden_dropout_prob=self.hidden_dropout_prob,
        initializer_range=self.initializer_range, dtype=self.dtype,
        attention_impl=self.attention_impl,
        valid_length=self.valid_length)(x, deterministic)
    x = Mlp(hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            initializer_range=self.initializer_range, dtype=self.dtype)(
                x, deterministic)
    return _constrain(x, self.activation_rules)


class _ScanStep(TransformerLayer):
  """A TransformerLayer as an `nn.scan` step: `(x [b, l, d], None) -> (x,
  None)`, with `deterministic` a field (a scan carries arrays only)."""
  deterministic: bool = True

  def __call__(self, x: jax.Array, unused) -> Tuple[jax.Array, None]:
    del unused
    return TransformerLayer.__call__(self, x, self.deterministic), None


class Embed(nn.Module):
  """Word plus position embeddings, LayerNorm, dropout.

  `[b, l]` int32 ids (negative ids count from the end of the vocabulary, so
  -1 is the last row) -> `[b, l, hidden_size]`.
  """
  vocab_size: int
  hidden_size: int
  max_position_embeddings: int
  hidden_dropout_prob: float
  initializer_range: float = 0.02

  @nn.compact
  def __call__(self, ids: jax.Array, deterministic: bool) -> jax.Array:
    init = truncated_normal(self.initializer_range)
    ids = jnp.where(ids < 0, ids + self.vocab_size, ids)
    words = nn.Embed(self.vocab_size, self.hidden_size,
                     embedding_init=_partitioned(init, ("vocab", "embed")),
                     name="word_embeddings")(ids)
    positions = nn.Embed(self.max_position_embeddings, self.hidden_size,
                         embedding_init=_partitioned(init, (None, "embed")),
                         name="position_embeddings")(
                             jnp.arange(ids.shape[-1])[None, :])
    x = _layer_norm("embeddings_ln")(words + positions)
    return nn.Dropout(rate=self.hidden_dropout_prob)(
        x, deterministic=deterministic)


class MlmLayer(nn.Module):
  """Dense, GELU, LayerNorm, tied output embedding, bias.

  `[b, l, d]` and embeddings `[vocab, d]` -> logits `[b, l, vocab]` (float32).
  """
  hidden_size: int
  initializer_range: float = 0.02
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, embeddings: jax.Array,
               num_outputs: Optional[int] = None) -> jax.Array:
    """`num_outputs`: the logits of the first `num_outputs` vocabulary rows
    only (`[b, l, num_outputs]`; the variables are the same)."""
    h = _dense(self.hidden_size, ("embed", "mlp"), self.initializer_range,
               self.dtype, "mlm_dense")(x)
    h = _layer_norm("mlm_ln")(jax.nn.gelu(h))
    vocab_size = embeddings.shape[0]
    if num_outputs is not None:
      embeddings = embeddings[:num_outputs]
    if self.dtype == jnp.float32:
      logits = jnp.matmul(h, embeddings.T)
    else:
      logits = attention.dot_general(self.dtype, float32_result=True)(
          h.astype(self.dtype), embeddings.astype(self.dtype),
          (((2,), (1,)), ((), ())))  # [b, l, d] x [v, d] -> f32 [b, l, v]
    return Bias(size=vocab_size, name="mlm_bias")(logits)


class Bias(nn.Module):
  """Adds a learned bias `[size]` over the last axis (the release's
  `mlm_bias/bias`); logits of the first k < size rows get its first k."""
  size: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bias = self.param("bias", _partitioned(nn.initializers.zeros, ("vocab",)),
                      (self.size,))
    return x + bias[:x.shape[-1]]


def cast_kernels(variables: Any, dtype: Dtype) -> Any:
  """`variables` with every dense kernel (a `kernel` leaf) cast to `dtype`.

  In the fast precision mode each dense layer casts its float32 kernel to
  bfloat16 on every call; a decode loop that calls the transformer
  `num_iter` times repeats those casts (about a tenth of a bfloat16 forward
  at the ImageNet-256 shape on a CPU). Casting once before the loop gives
  the same products, bit for bit. Biases, LayerNorm parameters and the
  embeddings stay as they are. Float32: `variables` unchanged.
  """
  if jnp.dtype(dtype) == jnp.float32:
    return variables

  def cast(path, leaf):
    named_kernel = any(getattr(k, "key", None) == "kernel" for k in path)
    return leaf.astype(dtype) if named_kernel else leaf
  return jax.tree_util.tree_map_with_path(cast, variables)


class Transformer(nn.Module):
  """BERT-style bidirectional transformer for masked visual token modelling.

  Attributes (the release's names where it has them):
    vocab_size: codebook_size + num_classes + 1.
    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size.
    hidden_dropout_prob, attention_probs_dropout_prob.
    max_position_embeddings: sequence length (latent_size**2 + 1).
    initializer_range: stddev of the truncated-normal initializer.
    dtype: computation dtype; float32 (default, matches the release) or
      bfloat16 (fast precision mode, float32 accumulation).
    activation_rules: logical-to-mesh axis rules for activation sharding
      constraints (None: unconstrained).
    remat: rematerialisation of each layer in the backward pass ("none",
      "minimal", "full"; see `layers.remat`). The variables are the same.
    scan_layers: the layers as one `nn.scan` (variables stacked under
      `layer_stack.STACK`; `layer_stack.to_layout` converts either way).
    attention_impl: "default" (the release's products; in bfloat16
      `attention.low_precision_attention`) or "fused"
      (`attention.fused_attention`: cuDNN's flash attention on an NVIDIA
      GPU in bfloat16; needs attention_probs_dropout_prob=0). The
      variables are the same.
  """
  vocab_size: int
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 256
  initializer_range: float = 0.02
  dtype: Dtype = jnp.float32
  activation_rules: Optional[Tuple[Tuple[str, Any], ...]] = None
  remat: str = "none"
  scan_layers: bool = False
  attention_impl: str = "default"

  @classmethod
  def from_preset(cls, name, **overrides) -> "Transformer":
    """A transformer of a named size (`imagenet256`, `imagenet512`, `small`,
    `tiny`; the ints 256 and 512 mean the ImageNet ones)."""
    if isinstance(name, int):
      name = f"imagenet{name}"
    if name not in PRESETS:
      raise ValueError(f"Unknown transformer preset {name!r}; expected one of "
                       f"{sorted(PRESETS)}.")
    return cls.create(**{**PRESETS[name], **overrides})

  @classmethod
  def create(cls, *, codebook_size: int, num_classes: int, latent_size: int,
             **fields) -> "Transformer":
    """Derives vocab and sequence sizes from the MaskGIT layout."""
    return cls(vocab_size=codebook_size + num_classes + 1,
               max_position_embeddings=latent_size**2 + 1, **fields)

  @nn.compact
  def __call__(self, ids: jax.Array, deterministic: bool = True,
               image_logits: Optional[int] = None) -> jax.Array:
    """`[batch, seq_len]` int ids -> float32 logits `[batch, seq_len, vocab]`.

    `image_logits=k` (training): only the image positions' logits over the
    first k ids (the codebook), `[batch, seq_len - 1, k]`, equal to
    `logits[:, 1:, :k]` without computing the rest; on a CPU this saves the
    output layer's padded gradient (about 5% of the small preset's step).
    """
    ids = ids.astype(jnp.int32)
    embed = Embed(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                  max_position_embeddings=self.max_position_embeddings,
                  hidden_dropout_prob=self.hidden_dropout_prob,
                  initializer_range=self.initializer_range)
    x = embed(ids, deterministic)
    length = ids.shape[1]
    # cuDNN's fused attention wants an even length: pad once, here, rather
    # than in every layer (attention.fused_padding); dropped before the head.
    pad = (attention.fused_padding(length, self.dtype)
           if self.attention_impl == "fused" else 0)
    if pad:
      x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
    x = _constrain(x, self.activation_rules)
    fields = dict(
        hidden_size=self.hidden_size,
        num_attention_heads=self.num_attention_heads,
        intermediate_size=self.intermediate_size,
        hidden_dropout_prob=self.hidden_dropout_prob,
        attention_probs_dropout_prob=self.attention_probs_dropout_prob,
        initializer_range=self.initializer_range, dtype=self.dtype,
        activation_rules=self.activation_rules,
        attention_impl=self.attention_impl,
        valid_length=length if pad else None)
    if self.scan_layers:
      stack = nn.scan(
          layers.remat(_ScanStep, self.remat, prevent_cse=False),
          variable_axes={"params": 0},
          split_rngs={"params": True, "dropout": True},
          length=self.num_hidden_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(deterministic=deterministic, name=layer_stack.STACK,
                   **fields)(x, None)
    else:
      layer = layers.remat(TransformerLayer, self.remat, static_argnums=(2,))
      for i in range(self.num_hidden_layers):
        x = layer(**fields, name=f"TransformerLayer_{i}")(x, deterministic)
    if pad:
      x = x[:, :length]
    embeddings = embed.variables["params"]["word_embeddings"]["embedding"]
    embeddings = nn.meta.unbox(embeddings)
    if image_logits is not None:
      x = x[:, 1:]
    return MlmLayer(hidden_size=self.hidden_size,
                    initializer_range=self.initializer_range,
                    dtype=self.dtype)(x, embeddings, image_logits)
