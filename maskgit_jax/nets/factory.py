"""Building and initialising the two models from presets or configs."""

import dataclasses
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from maskgit_jax.common import checks
from maskgit_jax.common import precision
from maskgit_jax.nets import attention
from maskgit_jax.nets import layers
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import quantizer_math
from maskgit_jax.nets import vqgan_tokenizer


def _roundtrip(module, images):
  return module.decode_from_indices(module.encode_to_indices(images))


def init_tokenizer(tokenizer: vqgan_tokenizer.VQVAE, rng: jax.Array,
                   image_size: int) -> Any:
  """Variables (unboxed) of `tokenizer` for `image_size` square images."""
  images = jnp.zeros((1, image_size, image_size, tokenizer.channels))
  init = jax.jit(lambda r: nn.meta.unbox(
      tokenizer.init(r, images, method=_roundtrip)))
  return init(rng)


def init_transformer(transformer: maskgit_transformer.Transformer,
                     rng: jax.Array) -> Any:
  """Variables (unboxed) of `transformer`."""
  ids = jnp.zeros((1, transformer.max_position_embeddings), jnp.int32)
  return jax.jit(lambda r: nn.meta.unbox(transformer.init(r, ids)))(rng)


_UNRESOLVED = ("is unset (auto): it is derived when training starts "
               "(maskgit_jax.train_lib.auto_config) and recorded in the "
               "run's config.json; use --workdir=RUN, or set it")


def _fields(section: ml_collections.ConfigDict, allowed, what: str,
            optional=()):
  """The section's fields; a None field is left out (the preset's value, or
  the model's default) when a preset is set or the key is `optional`."""
  values = section.to_dict()
  unknown = sorted(set(values) - set(allowed))
  if unknown:
    raise ValueError(f"Unknown {what} config key(s) {unknown}; allowed: "
                     f"{sorted(allowed)}.")
  preset = values.get("preset")
  values = {k: v for k, v in values.items()
            if not (v is None and (preset or k in optional))}
  # "auto" marks a field that `auto_config` derives, except for `dtype`,
  # where it is a value (`parse_dtype`).
  unset = sorted(k for k, v in values.items()
                 if v is None or (v == "auto" and k != "dtype"))
  if unset:
    raise ValueError(f"config.{what}.{unset[0]} {_UNRESOLVED}.")
  return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


# Tokenizer fields that may be None without a preset (the model's default);
# the size fields may not (`auto_config` fills them for a folder).
_TOKENIZER_OPTIONAL = ("code_dim", "commitment_cost", "entropy_loss_ratio",
                       "entropy_temperature", "dtype", "encoder_spatial_levels",
                       "group_norm", "quantizer_gradient",
                       "decoder_attention")


def tokenizer_from_config(config: ml_collections.ConfigDict
                          ) -> vqgan_tokenizer.VQVAE:
  """`config.tokenizer`: `preset` plus any VQVAE field overriding it."""
  fields = _fields(config.tokenizer, {"preset", *vqgan_tokenizer.VQVAE.field_names()},
                   "tokenizer", optional=_TOKENIZER_OPTIONAL)
  layers.check_remat_policy(fields.get("remat", "none"),
                            "config.tokenizer.remat")
  checks.check_int("config.tokenizer.encoder_spatial_levels",
                   fields.get("encoder_spatial_levels"), low=0,
                   allow_none=True, note="that many levels with 3x3 kernels; "
                   "None: every level")
  norm = fields.get("group_norm", layers.GROUP_NORMS[0])
  if norm not in layers.GROUP_NORMS:
    raise ValueError(f"config.tokenizer.group_norm={norm!r}: expected one of "
                     f"{layers.GROUP_NORMS} (None: 'reduce').")
  gradient = fields.get("quantizer_gradient",
                        quantizer_math.QUANTIZER_GRADIENTS[0])
  if gradient not in quantizer_math.QUANTIZER_GRADIENTS:
    raise ValueError(f"config.tokenizer.quantizer_gradient={gradient!r}: "
                     "expected one of "
                     f"{quantizer_math.QUANTIZER_GRADIENTS} (None: "
                     "'straight_through').")
  checks.check_number("config.tokenizer.commitment_cost",
                      fields.get("commitment_cost", 0.0), low=0,
                      note="None: the preset's 0.25")
  preset = fields.pop("preset", None)
  tokenizer = (vqgan_tokenizer.VQVAE.from_preset(preset, **fields) if preset
               else vqgan_tokenizer.VQVAE(**fields))
  check_tokenizer_sizes(tokenizer)
  return tokenizer


def check_tokenizer_sizes(tokenizer: vqgan_tokenizer.VQVAE) -> None:
  """One ValueError naming the `config.tokenizer` field whose size cannot
  build a tokenizer (before any array is made or config.json written)."""
  for name, low in (("filters", 1), ("num_res_blocks", 0),
                    ("embedding_dim", 1), ("codebook_size", 2),
                    ("num_groups", 1), ("channels", 1)):
    checks.check_int(f"config.tokenizer.{name}", getattr(tokenizer, name),
                     low=low)
  multipliers = tokenizer.channel_multipliers
  if (not isinstance(multipliers, (tuple, list)) or not multipliers or
      not all(checks.is_int(m, 1) for m in multipliers)):
    checks.refuse("config.tokenizer.channel_multipliers", multipliers,
                  "a non-empty tuple of ints >= 1, one per resolution level")
  checks.check_int("config.tokenizer.code_dim", tokenizer.code_dim, low=0,
                   allow_none=True, note="None or 0: no factorised code")
  checks.check_number("config.tokenizer.entropy_loss_ratio",
                      tokenizer.entropy_loss_ratio, low=0)
  checks.check_number("config.tokenizer.entropy_temperature",
                      tokenizer.entropy_temperature, 0, open_low=True)
  for name, choices in (("activation", layers.ACTIVATIONS),
                        ("entropy_loss_type",
                         quantizer_math.ENTROPY_LOSS_TYPES)):
    if getattr(tokenizer, name) not in choices:
      checks.refuse(f"config.tokenizer.{name}", getattr(tokenizer, name),
                    "one of " + ", ".join(map(repr, choices)))
  widths = sorted({tokenizer.filters * m for m in multipliers})
  if any(w % tokenizer.num_groups for w in widths):
    raise ValueError(f"config.tokenizer.num_groups={tokenizer.num_groups} "
                     f"must divide every level's channels (filters x "
                     f"channel_multipliers: {widths}).")


def check_transformer_sizes(fields: Dict[str, Any]) -> None:
  """One ValueError naming the `config.transformer` field whose value
  cannot build a transformer."""
  for name in ("hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size"):
    if name in fields:
      checks.check_int(f"config.transformer.{name}", fields[name], low=1)
  heads = fields.get("num_attention_heads")
  if heads and fields.get("hidden_size", 0) % heads:
    raise ValueError(f"config.transformer.hidden_size={fields['hidden_size']}"
                     f" must be a multiple of num_attention_heads={heads}.")
  for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
    checks.check_number(f"config.transformer.{name}", fields.get(name, 0.0),
                        0, 1, open_high=True)
  checks.check_number("config.transformer.initializer_range",
                      fields.get("initializer_range", 0.02), 0,
                      open_low=True)


TRANSFORMER_KEYS = {
    "preset", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "initializer_range", "dtype", "remat", "scan_layers", "attention_impl"}


def transformer_from_config(config: ml_collections.ConfigDict,
                            activation_rules=None
                            ) -> maskgit_transformer.Transformer:
  """`config.transformer` sizes; vocab and length follow the tokenizer/data.

  vocab = `tokenizer.codebook_size + config.num_classes + 1`; sequence =
  `(image_size // downsample_factor) ** 2 + 1`.
  """
  tokenizer = tokenizer_from_config(config)
  if config.num_classes is None or config.num_classes == "auto":
    raise ValueError(f"config.num_classes {_UNRESOLVED}.")
  fields = _fields(config.transformer, TRANSFORMER_KEYS, "transformer",
                   optional=TRANSFORMER_KEYS)
  layers.check_remat_policy(fields.get("remat", "none"),
                            "config.transformer.remat")
  preset = fields.pop("preset", None)
  if preset and preset not in maskgit_transformer.PRESETS:
    raise ValueError(f"Unknown transformer preset {preset!r}; expected one of "
                     f"{sorted(maskgit_transformer.PRESETS)}.")
  base = dict(maskgit_transformer.PRESETS[preset]) if preset else {}
  base.update(fields)
  check_transformer_sizes(base)
  if "dtype" in base:
    base["dtype"] = parse_dtype(base["dtype"])
  impl = base.get("attention_impl", "default")
  if impl not in attention.ATTENTION_IMPLS:
    raise ValueError(f"config.transformer.attention_impl={impl!r}; expected "
                     f"one of {attention.ATTENTION_IMPLS}.")
  if impl == "fused" and base.get("attention_probs_dropout_prob", 0.1):
    raise ValueError(
        "config.transformer.attention_impl='fused' has no attention dropout, "
        "but config.transformer.attention_probs_dropout_prob="
        f"{base.get('attention_probs_dropout_prob', 0.1)}: set it to 0.")
  factor = tokenizer.downsample_factor
  if config.image_size % factor:
    raise ValueError(f"image_size={config.image_size} is not divisible by the "
                     f"tokenizer's downsampling factor {factor}.")
  base.update(codebook_size=tokenizer.codebook_size,
              num_classes=config.num_classes,
              latent_size=config.image_size // factor)
  return maskgit_transformer.Transformer.create(
      activation_rules=activation_rules, **base)


def parse_dtype(name):
  """'float32', 'bfloat16' (the fast precision mode) or 'auto' (bfloat16
  where the hardware multiplies it natively, else float32:
  `common.precision`) -> a jnp dtype."""
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  name = precision.resolve(name)
  if name not in dtypes:
    raise ValueError(f"Unknown dtype {name!r}; expected 'float32', "
                     "'bfloat16' or 'auto'.")
  return dtypes[name]


_MODELS = {
    "tokenizer": (vqgan_tokenizer.VQVAE, vqgan_tokenizer.PRESETS,
                  _TOKENIZER_OPTIONAL),
    "transformer": (maskgit_transformer.Transformer, maskgit_transformer.PRESETS,
                    TRANSFORMER_KEYS),
}


def _as_recorded(value):
  """A model field's value as a run's config.json writes it."""
  if isinstance(value, tuple):
    return list(value)
  if isinstance(value, type) or hasattr(value, "dtype"):  # jnp.float32
    return jnp.dtype(value).name
  return value


def effective_fields(section: str, values: Dict[str, Any]) -> Dict[str, Any]:
  """`values` (the `config.<section>` of a run, "tokenizer" or
  "transformer", as a dict) with each None field that the model fills in
  (as `tokenizer_from_config` / `transformer_from_config` do: the preset's
  value, else the model's default) replaced by that value, as config.json
  records it ("float32" for a dtype). So a run recorded with None and one
  given the value it stood for compare equal. Other sections, unknown
  presets and fields the model does not know come back as they are: for
  comparing configs, this never raises."""
  if section not in _MODELS or not isinstance(values, dict):
    return values
  module, presets, optional = _MODELS[section]
  preset = values.get("preset")
  if preset and preset not in presets:
    return values
  base = presets[preset] if preset else {}
  defaults = {f.name: f.default for f in dataclasses.fields(module)
              if f.default is not dataclasses.MISSING}
  out = dict(values)
  for key, value in values.items():
    if value is not None or not (preset or key in optional):
      continue
    if key in base:
      out[key] = _as_recorded(base[key])
    elif key in defaults:
      out[key] = _as_recorded(defaults[key])
  return out
