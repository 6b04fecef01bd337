"""The Halton position scheduler of parallel_decode.decode (issue 15, item 1)."""
import fractions
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maskgit_jax.generation import sample_lib
from maskgit_jax.libml import halton
from maskgit_jax.libml import mask_schedule
from maskgit_jax.libml import parallel_decode
from maskgit_jax.libml import sampling
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer
from maskgit_jax.train_lib import defaults

ROOT = pathlib.Path(__file__).resolve().parents[1]
VOCAB = 11
SIDE = 4  # 4x4 grid after a class token: seq_len 17
SEQ = SIDE * SIDE + 1
CLASS_TOKEN = VOCAB  # any non-mask id


# ------------------------------------------------------- independent reference
def van_der_corput(i, base):
  """Radical inverse of i in `base`, the textbook float loop."""
  value, scale = 0.0, 1.0
  while i > 0:
    scale /= base
    value += (i % base) * scale
    i //= base
  return value


def exact_radical_inverse(i, base):
  value, scale = fractions.Fraction(0), fractions.Fraction(1)
  while i > 0:
    scale /= base
    value += (i % base) * scale
    i //= base
  return value


def reference_order(height, width):
  """Grid cells in order of the first Halton point i >= 1 that hits them."""
  order, i = [], 1
  while len(order) < height * width:
    x, y = exact_radical_inverse(i, 2), exact_radical_inverse(i, 3)
    cell = int(x * height) * width + int(y * width)
    if cell not in order:
      order.append(cell)
    i += 1
  return order


def test_halton_points_match_the_radical_inverse_reference():
  points = halton.halton_points(500)
  want = np.array([[van_der_corput(i, 2), van_der_corput(i, 3)]
                   for i in range(1, 501)])
  np.testing.assert_allclose(points, want, rtol=0, atol=1e-12)
  np.testing.assert_allclose(points[:4], [[1 / 2, 1 / 3], [1 / 4, 2 / 3],
                                          [3 / 4, 1 / 9], [1 / 8, 4 / 9]])
  # From 0: scipy's unscrambled Halton sequence, where scipy is installed.
  qmc = pytest.importorskip("scipy.stats.qmc")
  np.testing.assert_allclose(
      halton.halton_points(64, start=0),
      qmc.Halton(d=2, scramble=False).random(64), atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 4), (16, 16), (3, 5), (1, 1), (7, 2)])
def test_halton_order_is_each_cell_once_in_first_visit_order(shape):
  order = halton.halton_order(*shape)
  assert sorted(order.tolist()) == list(range(shape[0] * shape[1]))
  assert order.tolist() == reference_order(*shape)


def test_halton_order_by_hand():
  # (1/2, 1/3) -> (2, 1); (1/4, 2/3) -> (1, 2); (3/4, 1/9) -> (3, 0);
  # (1/8, 4/9) -> (0, 1) on a 4x4 grid, row-major.
  assert halton.halton_order(4, 4)[:4].tolist() == [9, 6, 12, 1]


def test_grid_layout():
  assert halton.grid_layout(17) == (1, 4, 4)
  assert halton.grid_layout(16) == (0, 4, 4)
  assert halton.grid_layout(257) == (1, 16, 16)
  assert halton.grid_layout(13, (3, 4)) == (1, 3, 4)
  with pytest.raises(ValueError, match="pass grid_shape"):
    halton.grid_layout(20)
  with pytest.raises(ValueError, match="does not fit"):
    halton.grid_layout(10, (4, 4))


# ------------------------------------------------------------------- decoding
ANSWER = (np.arange(SEQ) * 3 + 1) % VOCAB  # the token each position gets


def answer_model(ids):
  """Certain of `ANSWER` at every position, whatever the ids."""
  return jnp.broadcast_to(jax.nn.one_hot(ANSWER, VOCAB) * 100.,
                          ids.shape + (VOCAB,))


def generation_inputs(batch):
  ids = np.full((batch, SEQ), -1, np.int32)
  ids[:, 0] = CLASS_TOKEN
  return ids


def revealed_per_iteration(masks, unknown):
  """For each iteration, the grid positions newly unmasked (as a set)."""
  previous = unknown.copy()
  out = []
  for t in range(masks.shape[0]):
    now = unknown & ~masks[t]
    out.append(set(np.flatnonzero(now & previous)))
    previous = previous & masks[t]
  return out


def order_prefix_sets(order, counts):
  """The sets order[k_{t-1}:k_t] for cumulative counts k_t."""
  sets, done = [], 0
  for k in counts:
    sets.append(set(order[done:k]))
    done = k
  return sets


def scheduled_masked(unknown_start, num_iter, method, start_iter=0):
  """Tokens left masked after each iteration from `start_iter`: the
  release's formula, max(1, min(left - 1, floor(u * schedule((t+1)/T))))."""
  masked, left = [], unknown_start
  for t in range(start_iter, num_iter):
    ratio = np.float32((t + 1) / num_iter)
    left = max(1, min(left - 1, int(np.floor(unknown_start * float(
        mask_schedule.schedule(ratio, unknown_start, method))))))
    masked.append(left)
  return masked


@pytest.mark.parametrize("method,num_iter", [("uniform", 4), ("cosine", 6)])
def test_reveals_the_next_positions_of_the_order_in_scheduled_counts(
    method, num_iter):
  inputs = generation_inputs(2)
  seqs, masks = parallel_decode.decode(
      jnp.asarray(inputs), jax.random.PRNGKey(0), answer_model, -1, num_iter,
      0, 4.5, method, position_scheduler="halton", return_masks=True)
  seqs, masks = np.asarray(seqs), np.asarray(masks)
  unknown_start = SIDE * SIDE
  # Counts left masked after each iteration: the release's formula.
  masked = scheduled_masked(unknown_start, num_iter, method)
  if method == "uniform":
    assert masked == [12, 8, 4, 1]  # 16 * (1 - t/4), at least 1
  order = (1 + halton.halton_order(SIDE, SIDE)).tolist()
  for b in range(2):
    np.testing.assert_array_equal(masks[b].sum(-1), masked)
    # The last iteration samples every position (its mask count is the
    # release's bookkeeping only); before it, unmasked = a prefix.
    counts = [unknown_start - m for m in masked[:-1]] + [unknown_start]
    got = revealed_per_iteration(masks[b], inputs[b] == -1)
    got[-1] = got[-1] | set(np.flatnonzero(masks[b, -1]))
    assert got == order_prefix_sets(order, counts)
    assert not masks[b, :, 0].any()  # the class token is given
    for t in range(num_iter):
      kept = ~masks[b, t]
      np.testing.assert_array_equal(seqs[b, t, 1:][kept[1:]],
                                    ANSWER[1:][kept[1:]])
    np.testing.assert_array_equal(seqs[b, -1, 1:], ANSWER[1:])
    assert seqs[b, -1, 0] == CLASS_TOKEN


def test_same_draws_as_the_confidence_scheduler_at_the_first_iteration():
  """Guidance, top_k and temperature: at iteration 0 both schedulers sample
  the very same tokens from the same key (same logits, same key split)."""
  rs = np.random.RandomState(0)
  table = jnp.asarray(rs.randn(VOCAB + 1, VOCAB) * 2, jnp.float32)
  pos = jnp.asarray(rs.randn(SEQ, VOCAB), jnp.float32)

  def model(ids):
    rows = jnp.where(ids < 0, VOCAB, jnp.minimum(ids, VOCAB))
    return table[rows] + table[rows[:, :1]] + pos[None]

  inputs = jnp.asarray(generation_inputs(8))
  kwargs = dict(guidance_scale=1.5, guidance_schedule="linear", top_k=3,
                sampling_temperature=0.7, num_iter=5)
  halton = parallel_decode.decode(inputs, jax.random.PRNGKey(3), model,
                                  position_scheduler="halton", **kwargs)
  confidence = parallel_decode.decode(inputs, jax.random.PRNGKey(3), model,
                                      **kwargs)
  np.testing.assert_array_equal(halton[:, 0], confidence[:, 0])
  plain = parallel_decode.decode(inputs, jax.random.PRNGKey(3), model,
                                 position_scheduler="halton", num_iter=5)
  assert not np.array_equal(halton[:, 0], plain[:, 0])  # the options matter


def test_guidance_top_k_and_temperature_apply():
  a, b = 2, 5

  def model(ids):
    """cond: A + 2 B; uncond (class token masked): 3 B."""
    cond = jax.nn.one_hot(a, VOCAB) + 2 * jax.nn.one_hot(b, VOCAB)
    uncond = 3 * jax.nn.one_hot(b, VOCAB)
    logits = jnp.where((ids[:, :1] == -1)[..., None], uncond, cond)
    return jnp.broadcast_to(logits, ids.shape + (VOCAB,))

  inputs = jnp.asarray(generation_inputs(4))
  common = dict(num_iter=4, position_scheduler="halton", return_masks=True)
  # cond + 1 * (cond - uncond) = 2 A + B.
  guided, guided_masks = parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), model, guidance_scale=1.0,
      sampling_temperature=0.01, **common)
  assert (np.asarray(guided)[:, -1, 1:] == a).all()
  unguided, unguided_masks = parallel_decode.decode(
      inputs, jax.random.PRNGKey(0), model, sampling_temperature=0.01,
      **common)
  assert (np.asarray(unguided)[:, -1, 1:] == b).all()
  np.testing.assert_array_equal(guided_masks, unguided_masks)  # same order
  top1 = parallel_decode.decode(inputs, jax.random.PRNGKey(0), model,
                                guidance_scale=1.0, top_k=1, **common)[0]
  assert (np.asarray(top1)[:, -1, 1:] == a).all()
  hot = parallel_decode.decode(inputs, jax.random.PRNGKey(0), model,
                               guidance_scale=1.0, sampling_temperature=50.,
                               **common)[0]
  assert len(np.unique(np.asarray(hot)[:, -1, 1:])) > 2  # near uniform


def inpainting_inputs(batch, seed):
  rs = np.random.RandomState(seed)
  ids = rs.randint(0, VOCAB, (batch, SEQ)).astype(np.int32)
  ids[:, 0] = CLASS_TOKEN
  unknown = rs.rand(batch, SEQ) < 0.6
  unknown[:, 0] = False
  unknown[:, 1] = True  # at least one
  ids[unknown] = -1
  return ids


def restricted(order, unknown):
  return [p for p in order if unknown[p]]


@pytest.mark.parametrize("start_iter", [0, 2])
def test_inpainting_reveals_only_unknown_positions_in_restricted_order(
    start_iter):
  inputs = inpainting_inputs(5, seed=start_iter)
  num_iter = 8
  seqs, masks = parallel_decode.decode(
      jnp.asarray(inputs), jax.random.PRNGKey(1), answer_model, -1, num_iter,
      start_iter, 4.5, "cosine", position_scheduler="halton",
      return_masks=True)
  seqs, masks = np.asarray(seqs), np.asarray(masks)
  given = inputs != -1
  order = (1 + halton.halton_order(SIDE, SIDE)).tolist()
  for t in range(num_iter):
    np.testing.assert_array_equal(seqs[:, t][given], inputs[given])
    assert not (masks[:, t] & given).any()
  for b in range(len(inputs)):
    unknown = ~given[b]
    left = masks[b, start_iter:-1].sum(-1)  # masked after each but the last
    assert left.tolist() + [masks[b, -1].sum()] == scheduled_masked(
        unknown.sum(), num_iter, "cosine", start_iter)
    assert not masks[b, :start_iter].any()  # iterations not run
    counts = [unknown.sum() - m for m in left] + [unknown.sum()]
    got = revealed_per_iteration(masks[b, start_iter:], unknown)
    got[-1] = got[-1] | set(np.flatnonzero(masks[b, -1]))
    assert got == order_prefix_sets(restricted(order, unknown), counts)
    np.testing.assert_array_equal(seqs[b, -1][unknown], ANSWER[unknown])


def test_random_shift_is_a_cyclic_offset_per_sample():
  inputs = inpainting_inputs(6, seed=7)
  inputs[3:] = generation_inputs(3)
  num_iter = 6
  run = lambda key: parallel_decode.decode(
      jnp.asarray(inputs), key, answer_model, -1, num_iter, 0, 4.5, "cosine",
      position_scheduler="halton", halton_random_shift=True,
      return_masks=True)
  seqs, masks = (np.asarray(x) for x in run(jax.random.PRNGKey(2)))
  order = (1 + halton.halton_order(SIDE, SIDE)).tolist()
  given = inputs != -1
  shifts = []
  for b in range(len(inputs)):
    unknown = ~given[b]
    np.testing.assert_array_equal(
        seqs[b][:, given[b]],
        np.broadcast_to(inputs[b, given[b]], (num_iter, given[b].sum())))
    left = masks[b, :-1].sum(-1)
    counts = [unknown.sum() - m for m in left] + [unknown.sum()]
    got = revealed_per_iteration(masks[b], unknown)
    got[-1] = got[-1] | set(np.flatnonzero(masks[b, -1]))
    matches = [r for r in range(SIDE * SIDE) if got == order_prefix_sets(
        restricted(np.roll(order, r).tolist(), unknown), counts)]
    assert matches, f"sample {b}: not a rotation of the Halton order"
    shifts.append(matches[0])
  assert len(set(shifts[3:])) > 1  # generation samples differ in offset
  again = np.asarray(run(jax.random.PRNGKey(2))[1])
  np.testing.assert_array_equal(masks, again)  # the key decides


def test_options_are_checked():
  inputs = jnp.asarray(generation_inputs(1))
  with pytest.raises(ValueError, match="position scheduler 'spiral'"):
    parallel_decode.decode(inputs, jax.random.PRNGKey(0), answer_model,
                           position_scheduler="spiral")
  with pytest.raises(ValueError, match="needs position_scheduler='halton'"):
    parallel_decode.decode(inputs, jax.random.PRNGKey(0), answer_model,
                           halton_random_shift=True)
  with pytest.raises(ValueError, match="does not fit"):
    parallel_decode.decode(inputs, jax.random.PRNGKey(0), answer_model,
                           position_scheduler="halton", grid_shape=(5, 5))


def test_default_is_the_confidence_scheduler():
  rs = np.random.RandomState(4)
  table = jnp.asarray(rs.randn(VOCAB + 1, VOCAB) * 2, jnp.float32)

  def model(ids):
    return table[jnp.where(ids < 0, VOCAB, jnp.minimum(ids, VOCAB))]

  inputs = jnp.asarray(inpainting_inputs(3, seed=5))
  default = parallel_decode.decode(inputs, jax.random.PRNGKey(0), model, -1,
                                   6, 0, 4.5)
  explicit = parallel_decode.decode(inputs, jax.random.PRNGKey(0), model, -1,
                                    6, 0, 4.5,
                                    position_scheduler="confidence")
  np.testing.assert_array_equal(default, explicit)


# -------------------------------------------------- config, sampler and CLI
def test_config_options_and_their_checks():
  config = ml_collections.ConfigDict(dict(sampling=defaults.sampling()))
  options = sample_lib.decode_options(config)
  assert options["position_scheduler"] == "confidence"
  assert options["halton_random_shift"] is False
  options = sample_lib.decode_options(config, position_scheduler="halton",
                                      halton_random_shift=True)
  assert options["position_scheduler"] == "halton"
  old = ml_collections.ConfigDict(dict(sampling=defaults.sampling()))
  del old.sampling["position_scheduler"]
  del old.sampling["halton_random_shift"]
  assert sample_lib.decode_options(old)["position_scheduler"] == "confidence"
  with pytest.raises(ValueError) as e:
    sample_lib.decode_options(config, position_scheduler="spiral")
  assert str(e.value) == ("sampling.position_scheduler='spiral' must be one "
                          "of 'confidence', 'halton'.")
  with pytest.raises(ValueError, match=r"^sampling.halton_random_shift=True "
                     "needs sampling.position_scheduler='halton'.$"):
    sample_lib.decode_options(config, halton_random_shift=True)
  with pytest.raises(ValueError, match=r"^sampling.halton_random_shift='yes' "
                     "must be True or False.$"):
    sample_lib.decode_options(config, position_scheduler="halton",
                              halton_random_shift="yes")


def test_sampler_reveals_its_grid_in_halton_order():
  tok = vqgan_tokenizer.VQVAE.from_preset("tiny")
  tr = maskgit_transformer.Transformer.from_preset("tiny")
  tv = nn.meta.unbox(tok.init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
      method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x))))
  rv = nn.meta.unbox(tr.init(jax.random.key(1), jnp.zeros((1, 17), jnp.int32)))
  sampler = sampling.MaskGitSampler(tok, tv, tr, rv, num_classes=3)
  seqs, masks = sampler.generate_tokens(
      [0, 1], jax.random.PRNGKey(0), num_iter=4, return_masks=True,
      position_scheduler="halton")
  masks = np.asarray(masks)
  order = 1 + halton.halton_order(4, 4)
  # uniform would be 4 per step; cosine: 16 * cos(pi/8) = 14.8 -> 14 masked.
  assert set(np.flatnonzero(~masks[0, 0])) == {0} | set(order[:2])
  np.testing.assert_array_equal(masks[0], masks[1])
  assert (np.asarray(seqs)[:, -1] >= 0).all()
  images = sampler.generate([2], jax.random.PRNGKey(1), num_iter=3,
                            position_scheduler="halton",
                            halton_random_shift=True)
  assert images.shape == (1, 8, 8, 3)


def test_cli_flags(tmp_path):
  out = tmp_path / "grid.png"
  result = subprocess.run(
      [sys.executable, "-m", "maskgit_jax.sample",
       "--config=configs/fashion_mnist.py", "--config.image_size=8",
       "--config.num_classes=3", "--config.tokenizer.preset=tiny",
       "--config.tokenizer.channels=3", "--config.transformer.preset=tiny",
       "--config.class_names=()", "--num_iter=3", "--random_init",
       "--classes=0", "--samples_per_class=2", f"--output={out}",
       "--position_scheduler=halton", "--halton_random_shift"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert out.exists()
  result = subprocess.run(
      [sys.executable, "-m", "maskgit_jax.sample",
       "--config=configs/fashion_mnist.py", "--random_init",
       "--halton_random_shift", f"--output={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "error: sampling.halton_random_shift=True needs "
      "sampling.position_scheduler='halton'.")
