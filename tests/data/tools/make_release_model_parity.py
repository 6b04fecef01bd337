"""Writes tests/data/release_model_parity.npz from the released model code.

Usage (once, by hand; not part of the test suite):
  PYTHONPATH=/path/to/google-research-maskgit python \
      tests/data/tools/make_release_model_parity.py

Builds a small tokenizer and transformer with the released classes, fills every
parameter with numbers from `numpy.random.RandomState` drawn leaf by leaf in
sorted path order (so the test can rebuild them without this script), runs
them on fixed inputs and stores the inputs and outputs.
"""
import pathlib

import flax
import jax
import jax.numpy as jnp
from maskgit.nets import maskgit_transformer  # pylint: disable=import-error
from maskgit.nets import vqgan_tokenizer  # pylint: disable=import-error
import ml_collections
import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[1] / "release_model_parity.npz"
TOKENIZER = dict(filters=32, channel_multipliers=(1, 2), num_res_blocks=1,
                 embedding_dim=32, codebook_size=16)
TRANSFORMER = dict(vocab_size=16 + 3 + 1, hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=17)


def fill(shapes, seed):
  """Deterministic parameters: leaf i (sorted paths) from RandomState(seed+i)."""
  flat = flax.traverse_util.flatten_dict(shapes, sep="/")
  out = {}
  for i, path in enumerate(sorted(flat)):
    rs = np.random.RandomState(seed + i)
    out[path] = (rs.randn(*flat[path].shape) * 0.2).astype(np.float32)
  return flax.traverse_util.unflatten_dict(out, sep="/")


def main():
  config = ml_collections.ConfigDict()
  config.vqvae = ml_collections.ConfigDict(dict(
      quantizer="vq", entropy_loss_ratio=0.1, entropy_temperature=0.01,
      entropy_loss_type="softmax", commitment_cost=0.25,
      conv_downsample=False, activation_fn="swish", norm_type="GN",
      **{k: (list(v) if isinstance(v, tuple) else v)
         for k, v in TOKENIZER.items()}))
  tokenizer = vqgan_tokenizer.VQVAE(config=config, train=False)
  images = np.random.RandomState(100).rand(2, 8, 8, 3).astype(np.float32)
  shapes = jax.eval_shape(
      lambda: tokenizer.init(
          jax.random.PRNGKey(0), images,
          method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x))))
  tok_vars = fill(shapes, seed=1000)
  ids = tokenizer.apply(tok_vars, images, method=tokenizer.encode_to_indices)
  given_ids = np.random.RandomState(101).randint(0, 16, (2, 4, 4))
  decoded = tokenizer.apply(tok_vars, jnp.asarray(given_ids),
                            method=tokenizer.decode_from_indices)

  transformer = maskgit_transformer.Transformer(**TRANSFORMER)
  tokens = np.random.RandomState(102).randint(-1, 20, (2, 17)).astype(np.int32)
  shapes = jax.eval_shape(
      lambda: transformer.init(jax.random.PRNGKey(0), tokens))
  tr_vars = fill(shapes, seed=2000)
  logits = transformer.apply(tr_vars, tokens, deterministic=True)
  np.savez_compressed(
      OUT, images=images, ids=np.asarray(ids), given_ids=given_ids,
      decoded=np.asarray(decoded), tokens=tokens, logits=np.asarray(logits))
  print("wrote", OUT)


if __name__ == "__main__":
  main()
