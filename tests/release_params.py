"""Rebuilds the parameters used by tests/data/tools/make_release_model_parity.py."""
import flax
import jax
import flax.linen as nn
import numpy as np

# The sizes the parity file was made with (see the tool script).
TOKENIZER = dict(filters=32, channel_multipliers=(1, 2), num_res_blocks=1,
                 embedding_dim=32, codebook_size=16)
TRANSFORMER = dict(vocab_size=16 + 3 + 1, hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=17)


def fill(shapes, seed):
  """Leaf i (sorted '/'-joined paths) from RandomState(seed + i), times 0.2."""
  flat = flax.traverse_util.flatten_dict(shapes, sep="/")
  out = {}
  for i, path in enumerate(sorted(flat)):
    rs = np.random.RandomState(seed + i)
    out[path] = (rs.randn(*flat[path].shape) * 0.2).astype(np.float32)
  return flax.traverse_util.unflatten_dict(out, sep="/")


def shapes_of(module, *args, **kwargs):
  return jax.eval_shape(
      lambda: nn.meta.unbox(module.init(jax.random.key(0), *args, **kwargs)))
