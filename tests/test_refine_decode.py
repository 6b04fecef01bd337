"""parallel_decode.decode's corrector steps (`refine_steps`): a fake with a
known answer, invariants, and the option's path from the config."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maskgit_jax.generation import sample_lib
from maskgit_jax.libml import parallel_decode
from maskgit_jax.train_lib import defaults

VOCAB, SEQ = 16, 13
ANCHOR = 1  # the position every other one copies
ANCHOR_TOKEN = 3


def copy_anchor_model(ids):
  """Position ANCHOR is always ANCHOR_TOKEN; every other position copies the
  token at ANCHOR when it is known and is uniform over the vocabulary while
  it is masked. Decoding all tokens at once (one iteration) therefore draws
  the others at random (confidence 1/VOCAB) and the anchor right (~1)."""
  b, n = ids.shape
  anchor = ids[:, ANCHOR]
  copy = jax.nn.one_hot(jnp.maximum(anchor, 0), VOCAB) * 50.
  copy = jnp.where((anchor >= 0)[:, None], copy, 0.)
  logits = jnp.broadcast_to(copy[:, None, :], (b, n, VOCAB))
  return logits.at[:, ANCHOR].set(jax.nn.one_hot(ANCHOR_TOKEN, VOCAB) * 50.)


def inputs_all_masked(batch):
  ids = np.full((batch, SEQ), -1, np.int32)
  ids[:, 0] = VOCAB - 1  # a class token, given
  return jnp.asarray(ids)


def test_corrector_fixes_the_tokens_drawn_without_context():
  """Known answer: one iteration draws all but the anchor at random; one
  corrector step re-masking all but the most confident generated token
  (the anchor) re-draws them given it, so every token equals the anchor's."""
  inputs = inputs_all_masked(8)
  plain = np.asarray(parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), copy_anchor_model, num_iter=1))[:, -1]
  assert (plain[:, ANCHOR] == ANCHOR_TOKEN).all()
  assert (plain[:, 2:] != ANCHOR_TOKEN).mean() > 0.5
  fixed = np.asarray(parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), copy_anchor_model, num_iter=1,
      refine_steps=1, refine_fraction=(SEQ - 2) / (SEQ - 1)))[:, -1]
  np.testing.assert_array_equal(fixed[:, 1:], ANCHOR_TOKEN)
  np.testing.assert_array_equal(fixed[:, 0], VOCAB - 1)  # the class token
  # Chosen at random instead (huge noise on the confidence), one step
  # re-masks the anchor too in most rows: not every row comes out fixed.
  random = np.asarray(parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), copy_anchor_model, num_iter=1,
      refine_steps=1, refine_fraction=(SEQ - 2) / (SEQ - 1),
      refine_choice_temperature=1e4))[:, -1]
  assert not (random[:, 1:] == ANCHOR_TOKEN).all()


def random_model(ids):
  table = jax.random.normal(jax.random.PRNGKey(7), (VOCAB + 1, VOCAB)) * 3
  rows = jnp.where(ids < 0, VOCAB, ids)
  return jnp.roll(table[rows], 1, axis=1) + table[rows]


@pytest.mark.parametrize("fraction,temperature", [(0.25, 0.0), (1.0, 5.0)])
def test_iterations_unchanged_given_tokens_kept(fraction, temperature):
  """The iterations' entries are those of the sampler without corrector (the
  same key), only the last one changes, given tokens never do, and exactly
  `floor(fraction * generated)` tokens can change per step."""
  rs = np.random.RandomState(0)
  ids = np.full((6, SEQ), -1, np.int32)
  given = rs.rand(6, SEQ) < 0.3
  ids[given] = rs.randint(0, VOCAB, given.sum())
  ids[:, 0], given[:, 0] = VOCAB, True
  kw = dict(num_iter=5, choice_temperature=2.0, sampling_temperature=2.0)
  plain = np.asarray(parallel_decode.decode(
      jnp.asarray(ids), jax.random.PRNGKey(3), random_model, **kw))
  refined = np.asarray(parallel_decode.decode(
      jnp.asarray(ids), jax.random.PRNGKey(3), random_model, refine_steps=1,
      refine_fraction=fraction, refine_choice_temperature=temperature, **kw))
  np.testing.assert_array_equal(refined[:, :-1], plain[:, :-1])
  np.testing.assert_array_equal(refined[:, -1][given], ids[given])
  changed = (refined[:, -1] != plain[:, -1]).sum(-1)
  assert (changed <= np.floor((~given).sum(-1) * fraction)).all()
  assert changed.sum() > 0
  new = refined[:, -1][~given]
  assert ((new >= 0) & (new < VOCAB)).all()


def test_nothing_to_generate_and_bad_steps():
  ids = jnp.asarray(np.arange(SEQ, dtype=np.int32)[None] % VOCAB)
  out = parallel_decode.decode(ids, jax.random.PRNGKey(0), random_model,
                               num_iter=3, refine_steps=2)
  np.testing.assert_array_equal(np.asarray(out)[:, -1], ids)
  with pytest.raises(ValueError, match="refine_steps"):
    parallel_decode.decode(ids, jax.random.PRNGKey(0), random_model,
                           refine_steps=-1)


def test_config_keys_reach_decode_and_bad_values_are_one_line():
  config = ml_collections.ConfigDict(dict(sampling=defaults.sampling()))
  options = sample_lib.decode_options(config)
  assert (options["refine_steps"], options["refine_fraction"],
          options["refine_choice_temperature"]) == (0, 0.25, 0.0)
  for key in ("refine_steps", "refine_fraction", "refine_choice_temperature"):
    del config.sampling[key]  # a run's config.json from before the keys
  assert sample_lib.decode_options(config)["refine_steps"] == 0
  assert sample_lib.decode_options(config, refine_steps=2)["refine_steps"] == 2
  for key, value, want in [
      ("refine_steps", -1, r"an int in \[0, 2147483647\]"),
      ("refine_steps", 1.5, "an int"),
      ("refine_fraction", 0.0, r"a number in \(0, 1\]"),
      ("refine_fraction", 1.5, r"a number in \(0, 1\]"),
      ("refine_choice_temperature", -1.0, "a finite number >= 0")]:
    with pytest.raises(ValueError,
                       match=rf"^sampling.{key}={value!r} must be {want}"):
      sample_lib.decode_options(config, **{key: value})
