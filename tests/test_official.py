"""Reading checkpoints in the released format (Flax msgpack of {"params": ...})."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgit_jax.store import released
from maskgit_jax.libml import sampling
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer
import release_params


def write_released_format(path, module, *args, seed=0, **kwargs):
  """A file as the release wrote them: to_bytes of a plain {"params": ...}."""
  shapes = release_params.shapes_of(module, *args, **kwargs)
  variables = release_params.fill(shapes, seed)
  path.write_bytes(flax.serialization.to_bytes(variables))
  return variables


def roundtrip(m, x):
  return m.decode_from_indices(m.encode_to_indices(x))


def test_released_format_checkpoints_load_and_run(tmp_path):
  tok_path, tr_path = tmp_path / "tokenizer_ckpt", tmp_path / "maskgit_ckpt"
  tok_vars = write_released_format(
      tok_path, vqgan_tokenizer.VQVAE.from_preset("tiny"),
      jnp.zeros((1, 8, 8, 3)), method=roundtrip)
  tr_vars = write_released_format(
      tr_path, maskgit_transformer.Transformer.from_preset("tiny"),
      jnp.zeros((1, 17), jnp.int32), seed=1)

  tokenizer, loaded_tok = released.load_tokenizer(tok_path, image_size=8,
                                                  preset="tiny")
  transformer, loaded_tr = released.load_transformer(tr_path, preset="tiny")
  for want, got in ((tok_vars, loaded_tok), (tr_vars, loaded_tr)):
    jax.tree.map(np.testing.assert_array_equal, want, got)
  sampler = sampling.MaskGitSampler(tokenizer, loaded_tok, transformer,
                                    loaded_tr, num_classes=3)
  images = sampler.generate([0, 2], jax.random.PRNGKey(0), num_iter=4)
  assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all()


def test_bare_params_tree_is_accepted(tmp_path):
  model = maskgit_transformer.Transformer.from_preset("tiny")
  variables = release_params.fill(
      release_params.shapes_of(model, jnp.zeros((1, 17), jnp.int32)), 3)
  path = tmp_path / "bare"
  path.write_bytes(flax.serialization.to_bytes(variables["params"]))
  _, loaded = released.load_transformer(path, preset="tiny")
  jax.tree.map(np.testing.assert_array_equal, variables, loaded)


def test_wrong_size_is_a_clear_error(tmp_path):
  path = tmp_path / "tiny_tr"
  write_released_format(path, maskgit_transformer.Transformer.from_preset("tiny"),
                        jnp.zeros((1, 17), jnp.int32))
  with pytest.raises(ValueError, match=r"tiny_tr: .*(missing|shape)"):
    released.load_transformer(path, image_size=256)
  other = maskgit_transformer.Transformer.from_preset("tiny", hidden_size=32)
  write_released_format(path, other, jnp.zeros((1, 17), jnp.int32))
  with pytest.raises(ValueError, match=r"has shape \(.*32.*\), the model expects"):
    released.load_transformer(path, preset="tiny")


def test_bad_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope"):
    released.load_tokenizer(tmp_path / "nope")
  empty = tmp_path / "empty"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match="empty"):
    released.load_tokenizer(empty)
  junk = tmp_path / "junk"
  junk.write_bytes(b"\xc1 this is not msgpack" * 10)
  with pytest.raises(ValueError, match="junk: not a Flax msgpack"):
    released.load_tokenizer(junk)
  good = tmp_path / "good"
  write_released_format(good, vqgan_tokenizer.VQVAE.from_preset("tiny"),
                        jnp.zeros((1, 8, 8, 3)), method=roundtrip)
  truncated = tmp_path / "truncated"
  truncated.write_bytes(good.read_bytes()[:-100])
  with pytest.raises(ValueError, match="truncated"):
    released.load_tokenizer(truncated, image_size=8, preset="tiny")
