"""Editing: latent masks, compositing, and the sampler's edit operations."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgit_jax.libml import editing
from maskgit_jax.libml import sampling
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer


def test_box_mask_is_the_release_formula():
  mask = editing.latent_mask_from_box(editing.Box(64, 32, 128, 96), 256, 16)
  want = np.zeros((16, 16), np.float32)
  want[3:13, 1:9] = 1  # rows top//16-1 .. (h+top)//16+1, cols likewise
  np.testing.assert_array_equal(mask, want)
  corner = editing.latent_mask_from_box(editing.Box(0, 0, 16, 16), 256, 16)
  assert corner.sum() == 4 and corner[:2, :2].all()  # clipped at the border


def test_pixel_mask_grows_by_one_token():
  pixels = np.zeros((32, 32))
  pixels[9, 13] = 1  # token (2, 3) at 4 pixels per token
  mask = editing.latent_mask_from_pixels(pixels, 8)
  want = np.zeros((8, 8), np.float32)
  want[1:4, 2:5] = 1
  np.testing.assert_array_equal(mask, want)


def test_box_parsing_and_validation():
  assert editing.Box.parse("1_2_3_4") == editing.Box(1, 2, 3, 4)
  assert editing.Box.parse("1,2,3,4") == editing.Box(1, 2, 3, 4)
  with pytest.raises(ValueError, match="four integers"):
    editing.Box.parse("1_2_3")
  with pytest.raises(ValueError, match="outside"):
    editing.latent_mask_from_box(editing.Box(200, 0, 100, 10), 256, 16)
  with pytest.raises(ValueError, match="outside"):
    editing.Box(0, 0, 0, 5).validate(10, 10)


def test_composite_keeps_pixels_away_from_the_mask():
  rs = np.random.RandomState(0)
  original, generated = rs.rand(64, 64, 3), rs.rand(64, 64, 3)
  latent = np.zeros((4, 4))
  latent[0, 0] = 1
  out = editing.composite(original, generated, latent, blur_radius=3)
  np.testing.assert_array_equal(out[32:, 32:], original[32:, 32:].astype(np.float32))
  np.testing.assert_allclose(out[:8, :8], generated[:8, :8], atol=1e-6)


def test_outpaint_windows_fill_every_token():
  known = np.zeros((6, 9), bool)
  known[1:5, 0:4] = True
  original = known.copy()
  windows = list(editing.outpaint_windows(known, 4))
  covered = original.copy()
  for y, x in windows:
    assert not covered[y:y + 4, x:x + 4].all()  # every window has work to do
    covered[y:y + 4, x:x + 4] = True
  assert covered.all() and known.all()


@pytest.fixture(scope="module")
def sampler():
  tok = vqgan_tokenizer.VQVAE.from_preset("tiny")
  tr = maskgit_transformer.Transformer.from_preset("tiny")
  tv = nn.meta.unbox(tok.init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
      method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x))))
  rv = nn.meta.unbox(tr.init(jax.random.key(1), jnp.zeros((1, 17), jnp.int32)))
  return sampling.MaskGitSampler(tok, tv, tr, rv, num_classes=3)


def test_generate_and_history(sampler):
  images = sampler.generate([0, 1, None], jax.random.PRNGKey(0), num_iter=5)
  assert images.shape == (3, 8, 8, 3)
  assert images.min() >= 0 and images.max() <= 1
  history = sampler.decoding_history([0, 1, None], jax.random.PRNGKey(0),
                                     num_iter=5)
  assert history.shape == (3, 5, 8, 8, 3)
  # The same tokens decoded by two different compiled programs: equal up to
  # float32 rounding, which differs by instruction set (1.1e-6 seen on an
  # AVX-512 CPU for pixels in [0, 1]).
  np.testing.assert_allclose(history[:, -1], images, atol=1e-5)
  assert (history[:, 0] == 0.5).any()  # early frames show masked tokens


def test_inpaint_changes_only_the_masked_tokens(sampler):
  image = np.random.RandomState(0).rand(8, 8, 3).astype(np.float32)
  tokens = sampler.tokenize(image)[0]
  latent = np.zeros((4, 4), np.float32)
  latent[1:3, 1:3] = 1
  masked = np.where(latent > 0, -1, tokens).reshape(1, -1)
  inputs = np.concatenate([sampler.class_tokens([2], 1), masked], 1)
  seqs = np.asarray(sampler.decode_tokens(inputs, jax.random.PRNGKey(0),
                                          start_iter=2, num_iter=12))
  out = seqs[0, -1, 1:].reshape(4, 4)
  np.testing.assert_array_equal(out[latent == 0], tokens[latent == 0])

  edited = sampler.inpaint(image, editing.Box(2, 2, 2, 2), 1,
                           jax.random.PRNGKey(0), num_samples=2, blur_radius=0)
  assert edited.shape == (2, 8, 8, 3)
  # Box (2,2,2,2) at 2 px/token covers token (1,1), grown to tokens 0..2.
  np.testing.assert_array_equal(edited[:, 6:, :], np.broadcast_to(
      image[6:, :], (2, 2, 8, 3)))
  np.testing.assert_array_equal(edited[:, :, 6:], np.broadcast_to(
      image[:, 6:], (2, 8, 2, 3)))


def test_outpaint_extends_and_keeps_the_original(sampler):
  image = np.random.RandomState(1).rand(8, 8, 3).astype(np.float32)
  out = sampler.outpaint(image, jax.random.PRNGKey(0), label=0, right=3,
                         up=2, blur_radius=0)
  assert out.shape == (8 + 2, 8 + 4, 3)  # 3 px rounds up to 2 tokens of 2 px
  np.testing.assert_array_equal(out[2:, :8], image)


def test_bad_requests(sampler):
  with pytest.raises(ValueError, match="Class id 3 is out of range"):
    sampler.generate([3], jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="Image of shape"):
    sampler.inpaint(np.zeros((16, 16, 3)), editing.Box(0, 0, 2, 2), 0,
                    jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="empty"):
    sampler.inpaint(np.zeros((8, 8, 3)), np.zeros((8, 8)), 0,
                    jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="positive"):
    sampler.outpaint(np.zeros((8, 8, 3)), jax.random.PRNGKey(0))
