"""parallel_decode.decode: release parity, invariants, fakes, extensions."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgit_jax.libml import mask_schedule
from maskgit_jax.libml import parallel_decode

CASES = [  # (name, num_iter, start_iter, choice_temperature, method, seed)
    ("cosine_t4.5", 8, 0, 4.5, "cosine", 0),
    ("cosine_t1", 12, 0, 1.0, "cosine", 1),
    ("uniform_t0", 6, 0, 0.0, "uniform", 2),
    ("pow2.5_t2", 8, 0, 2.0, "pow2.5", 3),
    ("log_t1", 8, 0, 1.0, "log", 4),
    ("exp_t1", 8, 0, 1.0, "exp", 5),
    ("edit_start2", 12, 2, 4.5, "cosine", 6),
]


@pytest.fixture
def release(data_dir):
  return np.load(data_dir / "release_decode_parity.npz")


def table_model(table, position):
  """The fixed tokens_to_logits the parity file was made with."""
  vocab = table.shape[1]
  table, position = jnp.asarray(table), jnp.asarray(position)

  def tokens_to_logits(ids):
    rows = jnp.where(ids < 0, vocab, jnp.minimum(ids, vocab))
    return table[rows] + position[None]
  return tokens_to_logits


@pytest.mark.parametrize("partitionable", [True, False])
def test_same_tokens_as_the_released_decode(release, partitionable):
  t2l = table_model(release["table"], release["position"])
  before = jax.config.jax_threefry_partitionable
  jax.config.update("jax_threefry_partitionable", partitionable)
  try:
    for name, num_iter, start_iter, temp, method, seed in CASES:
      inputs = release["partial"] if start_iter else release["full"]
      got = parallel_decode.decode(
          jnp.asarray(inputs), jax.random.PRNGKey(seed), t2l, -1, num_iter,
          start_iter, temp, method)
      np.testing.assert_array_equal(
          np.asarray(got), release[f"{name}/partitionable={partitionable}"],
          err_msg=name)
  finally:
    jax.config.update("jax_threefry_partitionable", before)


def random_model(vocab, seq_len, seed=0):
  """A fake model whose logits depend on the ids (so iterations interact)."""
  rs = np.random.RandomState(seed)
  table = jnp.asarray(rs.randn(vocab + 1, vocab) * 3, jnp.float32)
  pos = jnp.asarray(rs.randn(seq_len, vocab), jnp.float32)

  def tokens_to_logits(ids):
    rows = jnp.where(ids < 0, vocab, ids)
    mixed = jnp.roll(table[rows], 1, axis=1) + table[rows]
    return mixed + pos[None]
  return tokens_to_logits


VOCAB, SEQ = 10, 33
MODEL = random_model(VOCAB, SEQ)


def make_inputs(batch, rs, known_fraction=0.0):
  ids = np.full((batch, SEQ), -1, np.int32)
  known = rs.rand(batch, SEQ) < known_fraction
  ids[known] = rs.randint(0, VOCAB, known.sum())
  ids[:, 0] = VOCAB  # a class token, always known
  return ids


@pytest.mark.parametrize("method", ["cosine", "uniform", "pow2.5", "log", "exp"])
@pytest.mark.parametrize("choice_temperature", [0.0, 1.0, 4.5])
def test_invariants_over_seeds(method, choice_temperature):
  num_iter = 8
  rs = np.random.RandomState(0)
  for seed in range(4):
    known_fraction = [0.0, 0.3][seed % 2]
    inputs = make_inputs(3, rs, known_fraction)
    seqs, masks = parallel_decode.decode(
        jnp.asarray(inputs), jax.random.PRNGKey(seed), MODEL, -1, num_iter, 0,
        choice_temperature, method, return_masks=True)
    seqs, masks = np.asarray(seqs), np.asarray(masks)
    assert seqs.shape == (3, num_iter, SEQ) and seqs.dtype == np.int32
    given = inputs != -1
    unknown_start = (~given).sum(-1)
    unknown = unknown_start.copy()
    for t in range(num_iter):
      # Given tokens never change.
      np.testing.assert_array_equal(seqs[:, t][given], inputs[given])
      assert (seqs[:, t] >= 0).all() and (seqs[:, t] < VOCAB + 1).all()
      ratio = (t + 1) / num_iter
      want = np.maximum(1, np.minimum(
          unknown - 1,
          np.floor(unknown_start * np.asarray(
              mask_schedule.schedule(np.float32(ratio), unknown_start,
                                     method)))))
      if t < num_iter - 1:
        np.testing.assert_array_equal(masks[:, t].sum(-1), want,
                                      err_msg=f"iteration {t}")
        # Only tokens that were unknown are masked again.
        assert not (masks[:, t] & given).any()
      if t > 0:  # tokens kept after iteration t-1 never change later.
        kept = ~masks[:, t - 1]
        np.testing.assert_array_equal(seqs[:, t][kept], seqs[:, t - 1][kept])
      unknown = masks[:, t].sum(-1)
    assert (seqs[:, -1] != -1).all(), "the last iteration leaves no mask"


def test_same_key_same_result_other_key_other_result():
  inputs = jnp.asarray(make_inputs(2, np.random.RandomState(1)))
  a = parallel_decode.decode(inputs, jax.random.PRNGKey(0), MODEL)
  b = parallel_decode.decode(inputs, jax.random.PRNGKey(0), MODEL)
  c = parallel_decode.decode(inputs, jax.random.PRNGKey(1), MODEL)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  # Typed keys work too.
  d = parallel_decode.decode(inputs, jax.random.key(0), MODEL)
  assert d.shape == a.shape


def best_token_model(best, margin=4.0):
  best = jnp.asarray(best)

  def tokens_to_logits(ids):
    del ids
    return jax.nn.one_hot(best, VOCAB)[None] * margin
  return tokens_to_logits


def test_known_best_token_is_chosen_at_low_temperature():
  best = np.random.RandomState(3).randint(0, VOCAB, SEQ)
  inputs = jnp.asarray(make_inputs(4, np.random.RandomState(2)))
  out = parallel_decode.decode(inputs, jax.random.PRNGKey(0),
                               best_token_model(best), sampling_temperature=0.01)
  np.testing.assert_array_equal(np.asarray(out[:, -1, 1:]),
                                np.broadcast_to(best[1:], (4, SEQ - 1)))
  # At temperature 1 the same margin leaves visible randomness.
  warm = parallel_decode.decode(inputs, jax.random.PRNGKey(0),
                                best_token_model(best), sampling_temperature=1.)
  assert (np.asarray(warm[:, -1, 1:]) != best[1:]).any()


def test_sampling_temperature_schedule():
  """`sampling_temperature_end`: linear from the first to the last iteration
  (the values), a no-op when it equals the start (the same tokens), and a
  known answer: drawn at 100 then cooled to 0.01, the tokens revealed at the
  last iteration are the best ones, those revealed at the first are not."""
  at = parallel_decode.sampling_temperature_at
  assert [at(t, 5, 1.2, 0.4) for t in range(5)] == pytest.approx(
      [1.2, 1.0, 0.8, 0.6, 0.4])
  assert at(0, 1, 1.2, 0.4) == 1.2 and at(3, 5, 0.7) == 0.7
  best = np.random.RandomState(3).randint(0, VOCAB, SEQ)
  inputs = jnp.asarray(make_inputs(16, np.random.RandomState(2)))
  same = [parallel_decode.decode(inputs, jax.random.PRNGKey(0),
                                 best_token_model(best, margin=1.0),
                                 sampling_temperature=0.7, **kw)
          for kw in ({}, {"sampling_temperature_end": 0.7})]
  np.testing.assert_array_equal(same[0], same[1])
  seqs, masks = parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), best_token_model(best),
      num_iter=4, choice_temperature=1.0, sampling_temperature=100.0,
      sampling_temperature_end=0.01, return_masks=True)
  seqs, masks = np.asarray(seqs), np.asarray(masks)
  unknown = np.asarray(inputs) == -1
  first = unknown & ~masks[:, 0]  # revealed by iteration 0
  last = masks[:, -2]  # still masked before the last iteration: drawn there
  final = seqs[:, -1]
  target = np.broadcast_to(best, final.shape)
  assert last.any() and first.any()
  np.testing.assert_array_equal(final[last], target[last])
  assert (final[first] != target[first]).mean() > 0.5


def test_top_k_restricts_the_choice():
  rs = np.random.RandomState(4)
  logits = jnp.asarray(rs.randn(SEQ, VOCAB), jnp.float32)
  top2 = np.argsort(-np.asarray(logits), axis=-1)[:, :2]
  inputs = jnp.asarray(make_inputs(8, rs))
  out = np.asarray(parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), lambda ids: logits[None], top_k=2,
      sampling_temperature=5.0)[:, -1])
  for pos in range(1, SEQ):
    assert set(out[:, pos]) <= set(top2[pos])
  out1 = np.asarray(parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), lambda ids: logits[None], top_k=1,
      sampling_temperature=5.0)[:, -1])
  np.testing.assert_array_equal(out1[:, 1:], np.broadcast_to(
      top2[1:, 0], (8, SEQ - 1)))


def guided_model(ids):
  """cond: tokens 0 and 1 equally likely; uncond (class masked): 0 likely."""
  is_cond = (ids[:, :1] != -1)[..., None]
  cond = jnp.zeros((ids.shape[0], SEQ, 2))
  uncond = cond.at[..., 0].set(3.0)
  return jnp.where(is_cond, cond, uncond)


def test_classifier_free_guidance():
  inputs = jnp.asarray(np.where(np.arange(SEQ) == 0, 5, -1)[None].repeat(16, 0),
                       jnp.int32)
  plain = np.asarray(parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), guided_model)[:, -1, 1:])
  assert 0.3 < plain.mean() < 0.7  # unguided: about half are token 1
  guided = np.asarray(parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), guided_model, guidance_scale=3.0)[:, -1, 1:])
  assert guided.mean() > 0.97  # pushed away from the unconditional choice
  # Scale 0 is exactly the unguided sampler.
  zero = np.asarray(parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), guided_model, guidance_scale=0.0)[:, -1, 1:])
  np.testing.assert_array_equal(zero, plain)
  # A schedule that starts weak guides less than a constant one.
  linear = np.asarray(parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), guided_model, guidance_scale=3.0,
      guidance_schedule="linear", num_iter=4)[:, -1, 1:])
  assert plain.mean() < linear.mean() <= guided.mean()


def test_guidance_weights():
  np.testing.assert_allclose(parallel_decode.guidance_weight("constant", 0.25), 1)
  np.testing.assert_allclose(parallel_decode.guidance_weight("linear", 0.25), 0.25)
  np.testing.assert_allclose(
      parallel_decode.guidance_weight("cosine", 0.25),
      1 - np.cos(np.pi / 8), rtol=1e-6)
  with pytest.raises(ValueError, match="guidance schedule"):
    parallel_decode.decode(jnp.zeros((1, 4), jnp.int32) - 1,
                           jax.random.PRNGKey(0), guided_model,
                           guidance_scale=1.0, guidance_schedule="square")


def test_compiles_once_for_repeated_calls():
  traces = []

  def counting_model(ids):
    traces.append(ids.shape)
    return MODEL(ids)

  rs = np.random.RandomState(5)
  for seed in range(3):
    out = parallel_decode.decode(jnp.asarray(make_inputs(2, rs)),
                                 jax.random.PRNGKey(seed), counting_model,
                                 choice_temperature=1.0 + seed)
    out.block_until_ready()
  assert len(traces) == 1, traces


def test_other_mask_token_id():
  mask_id = VOCAB  # a non-negative mask id, as the release allows
  inputs = np.full((2, SEQ), mask_id, np.int32)
  inputs[:, 0] = VOCAB + 1
  model = lambda ids: MODEL(jnp.where(ids == mask_id, -1, ids))  # noqa: E731
  out = np.asarray(parallel_decode.decode(
      jnp.asarray(inputs), jax.random.PRNGKey(0), model, mask_token_id=mask_id))
  assert (out[:, -1] != mask_id).all() and (out[:, -1, 0] == VOCAB + 1).all()


def test_bad_options():
  inputs = jnp.asarray(make_inputs(1, np.random.RandomState(0)))
  with pytest.raises(ValueError, match="mask schedule"):
    parallel_decode.decode(inputs, jax.random.PRNGKey(0), MODEL,
                           mask_scheduling_method="linear")
  with pytest.raises(ValueError, match="start_iter"):
    parallel_decode.decode(inputs, jax.random.PRNGKey(0), MODEL, num_iter=4,
                           start_iter=5)


def test_temperature_schedule_in_config_sampler_and_checks():
  """`sampling.sampling_temperature_end` reaches the sampler's decode (the
  same tokens as `decode` itself), defaults to None for a config written
  before it existed, and a bad value is one line naming the key."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from maskgit_jax.generation import sample_lib  # pylint: disable=import-outside-toplevel
  from maskgit_jax.libml import sampling  # pylint: disable=import-outside-toplevel
  from maskgit_jax.nets import maskgit_transformer  # pylint: disable=import-outside-toplevel
  from maskgit_jax.nets import vqgan_tokenizer  # pylint: disable=import-outside-toplevel
  from maskgit_jax.train_lib import defaults  # pylint: disable=import-outside-toplevel
  config = ml_collections.ConfigDict(dict(sampling=defaults.sampling()))
  assert sample_lib.decode_options(config)["sampling_temperature_end"] is None
  del config.sampling["sampling_temperature_end"]
  assert sample_lib.decode_options(config)["sampling_temperature_end"] is None
  options = sample_lib.decode_options(config, sampling_temperature=1.1,
                                      sampling_temperature_end=0.5)
  assert (options["sampling_temperature"],
          options["sampling_temperature_end"]) == (1.1, 0.5)
  with pytest.raises(ValueError, match=r"^sampling.sampling_temperature_end="
                     r"-1.0 must be a finite number > 0 or None \(constant\).$"):
    sample_lib.decode_options(config, sampling_temperature_end=-1.0)
  tok = vqgan_tokenizer.VQVAE.from_preset("tiny")
  tr = maskgit_transformer.Transformer.from_preset("tiny")
  tok_vars = tok.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  tr_vars = tr.init(jax.random.PRNGKey(1), jnp.zeros(
      (1, tr.max_position_embeddings), jnp.int32))
  sampler = sampling.MaskGitSampler(tok, tok_vars, tr, tr_vars,
                                    num_classes=3)
  inputs = sampler.generation_inputs([0, 1, 2, 0])
  kw = dict(num_iter=4, choice_temperature=2.0, sampling_temperature=3.0,
            sampling_temperature_end=0.3)
  got = sampler.decode_tokens(inputs, jax.random.PRNGKey(5), **kw)
  want = parallel_decode.decode(
      jnp.asarray(inputs), jax.random.PRNGKey(5),
      sampler._logits_fn(tr_vars),  # pylint: disable=protected-access
      mask_token_id=sampling.MASK_TOKEN_ID,
      null_inputs_fn=functools.partial(
          sampling._set_class_token,  # pylint: disable=protected-access
          class_id=sampler.null_class_id), **kw)
  np.testing.assert_array_equal(got, want)
  constant = sampler.decode_tokens(inputs, jax.random.PRNGKey(5), num_iter=4,
                                   choice_temperature=2.0,
                                   sampling_temperature=3.0)
  assert not np.array_equal(got, constant)
