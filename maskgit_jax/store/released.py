"""Read the released MaskGIT ImageNet checkpoints into this project's modules.

The release ships four Flax msgpack files (`flax.serialization.to_bytes` of a
`{"params": ...}` tree): `tokenizer_imagenet{256,512}_checkpoint` and
`maskgit_imagenet{256,512}_checkpoint`. They are read with
`flax.serialization.msgpack_restore` (no TensorFlow, no pickle: the format can
hold only nested maps, numbers, strings and raw arrays), checked path by path
and shape by shape against the module that will use them, and returned as
variables that `module.apply` takes directly.

    tokenizer, tok_vars = released.load_tokenizer(".../tokenizer_imagenet256_checkpoint")
    transformer, tr_vars = released.load_transformer(
        ".../maskgit_imagenet256_checkpoint", image_size=256)
"""

import os
from typing import Any, Dict, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.nets import layer_stack
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer

Variables = Dict[str, Any]


def read_msgpack(path: str) -> Variables:
  """Reads a Flax msgpack file into a nested dict of numpy arrays."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Checkpoint file not found: {path}")
  with open(path, "rb") as f:
    data = f.read()
  if not data:
    raise ValueError(f"{path}: the file is empty.")
  try:
    tree = flax.serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several unrelated types.
    raise ValueError(f"{path}: not a Flax msgpack checkpoint, or truncated "
                     f"({type(e).__name__}: {e}).") from None
  if not isinstance(tree, dict):
    raise ValueError(f"{path}: expected a map of variables, found "
                     f"{type(tree).__name__}.")
  _check_leaves(tree, path, ())
  return tree


def _check_leaves(node, path: str, where: Tuple[str, ...]) -> None:
  """Raises a ValueError naming the file unless `node` is a tree of maps
  with string keys and numeric arrays or numbers at the leaves."""
  if isinstance(node, dict):
    for key, value in node.items():
      if not isinstance(key, str):
        raise ValueError(f"{path}: non-string key {key!r:.40} at "
                         f"{'/'.join(where) or 'the top level'}.")
      _check_leaves(value, path, where + (key,))
    return
  kind = getattr(node, "dtype", None)
  if kind is None and isinstance(node, (bool, int, float)):
    return
  if kind is None or not (jnp.issubdtype(kind, jnp.number) or
                          jnp.issubdtype(kind, jnp.bool_)):
    raise ValueError(f"{path}: {'/'.join(where)} is a "
                     f"{type(node).__name__}"
                     f"{f' of {kind}' if kind is not None else ''}, not a "
                     "numeric array.")


def _flat_shapes(tree) -> Dict[str, Tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(tree, sep="/")
  return {k: tuple(np.shape(v)) for k, v in flat.items()}


def check_tree(variables: Variables, expected: Variables, source: str) -> None:
  """Raises a one-line ValueError naming the first path or shape that differs."""
  got, want = _flat_shapes(variables), _flat_shapes(expected)
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  if missing or unexpected:
    raise ValueError(
        f"{source}: variables do not match the model ({len(missing)} missing, "
        f"{len(unexpected)} unexpected; first missing: "
        f"{missing[:1] or None}, first unexpected: {unexpected[:1] or None}). "
        "Is it a checkpoint of another model or size?")
  for k in sorted(want):
    if got[k] != want[k]:
      raise ValueError(f"{source}: {k} has shape {got[k]}, the model expects "
                       f"{want[k]}. Is it a checkpoint of another model size?")


def model_shapes(module: nn.Module, *example_args, **kwargs) -> Variables:
  """The variable tree (ShapeDtypeStructs, unboxed) that `module` creates."""
  return jax.eval_shape(lambda: nn.meta.unbox(
      module.init(jax.random.key(0), *example_args, **kwargs)))


def to_module_layout(variables: Variables, module: nn.Module) -> Variables:
  """`variables` with a transformer's layers in `module`'s layout (scanned
  or the release's, nets/layer_stack.py); other trees unchanged."""
  if not isinstance(module, maskgit_transformer.Transformer) or not (
      isinstance(variables, dict) and isinstance(variables.get("params"),
                                                 dict)):
    return variables
  return {**variables, "params": layer_stack.to_layout(variables["params"],
                                                      module.scan_layers)}


def load_variables(path: str, module: nn.Module, *example_args,
                   **kwargs) -> Variables:
  """Reads `path` and checks it against `module.init(*example_args)`.

  Accepts `{"params": ...}` (the release's layout) or a bare params tree.
  Returns float32 jnp arrays in the module's tree structure.
  """
  tree = read_msgpack(path)
  if "params" not in tree:
    tree = {"params": tree}
  expected = model_shapes(module, *example_args, **kwargs)
  tree = to_module_layout({k: v for k, v in tree.items() if k in expected},
                          module)
  check_tree(tree, expected, os.fspath(path))
  return jax.tree.map(
      lambda x, s: jnp.asarray(x, dtype=s.dtype), tree, expected)


def load_tokenizer(path: str, image_size: int = 256, preset: str = "imagenet",
                   **overrides):
  """Returns `(VQVAE, variables)` for a released (or same-format) tokenizer."""
  tokenizer = vqgan_tokenizer.VQVAE.from_preset(preset, **overrides)
  images = jnp.zeros((1, image_size, image_size, tokenizer.channels),
                     jnp.float32)
  variables = load_variables(
      path, tokenizer, images,
      method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x)))
  return tokenizer, variables


def load_transformer(path: str, image_size: int = 256, preset=None,
                     **overrides):
  """Returns `(Transformer, variables)` for a released (or same-format) file.

  `preset` defaults to the released model for `image_size` (256 or 512).
  """
  if preset is None:
    if image_size not in (256, 512):
      raise ValueError(f"The released transformers are for 256 or 512 "
                       f"pixels, got image_size={image_size}.")
    preset = image_size
  transformer = maskgit_transformer.Transformer.from_preset(preset, **overrides)
  ids = jnp.zeros((1, transformer.max_position_embeddings), jnp.int32)
  return transformer, load_variables(path, transformer, ids)
