"""Pieces of the training library: masking, perceptual loss, optimizer, durations."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgit_jax.libml import mask_schedule
from maskgit_jax.nets import inception
from maskgit_jax.train_lib import optim
from maskgit_jax.train_lib import periodic
from maskgit_jax.train_lib import run
from maskgit_jax.train_lib import tokenizer_task
import release_params
import test_train


@pytest.mark.parametrize("method", ["cosine", "uniform", "pow2", "log"])
def test_training_mask_has_the_exact_count_per_example(method):
  mask, n = mask_schedule.random_training_mask(jax.random.PRNGKey(0), 64, 256,
                                               method)
  mask, n = np.asarray(mask), np.asarray(n)
  np.testing.assert_array_equal(mask.sum(-1), n)
  assert n.min() >= 1 and n.max() <= 256
  assert len(set(n.tolist())) > 10  # ratios differ between examples
  # Positions are spread, not always the first n.
  assert not all(mask[i, :n[i]].all() for i in range(64))


def test_weight_decay_mask_spares_biases_norms_and_embeddings():
  params = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))},
            "LayerNorm_0": {"scale": jnp.ones((4,)), "bias": jnp.ones((4,))},
            "Embed_0": {"word_embeddings": {"embedding": jnp.ones((5, 4))}},
            "quantizer": {"codebook": jnp.ones((8, 4))}}
  mask = optim.decay_mask(params)
  assert mask["Dense_0"] == {"kernel": True, "bias": False}
  assert not any(jax.tree.leaves(mask["LayerNorm_0"]))
  assert not any(jax.tree.leaves(mask["Embed_0"]))
  assert not mask["quantizer"]["codebook"]


def test_durations_convert_in_one_place():
  assert periodic.to_steps(100) == 100
  assert periodic.to_steps("2 epochs", steps_per_epoch=937.5) == 1875
  assert periodic.to_steps("1000 examples", batch_size=64) == 16
  assert periodic.to_steps(None) == 0
  with pytest.raises(ValueError, match="log_every='soon'"):
    periodic.to_steps("soon", name="log_every")
  assert periodic.is_time(200, 100) and not periodic.is_time(150, 100)
  assert periodic.is_time(7, 100, last_step=7) and not periodic.is_time(5, 0)


def test_perceptual_loss_from_the_fid_weights_file():
  try:
    path = inception.default_weights_path()
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"FID weights not installed (make test installs them): {e}")
  notes = []
  loss = tokenizer_task.perceptual_loss_fn(str(path), note=notes.append)
  assert loss is not None and not notes
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.rand(2, 16, 16, 1), jnp.float32)
  y = jnp.asarray(rs.rand(2, 16, 16, 1), jnp.float32)
  assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
  assert float(loss(x, y)) > 1e-4
  grad = jax.grad(lambda a: loss(a, y))(x)
  assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0
  off = []
  assert tokenizer_task.perceptual_loss_fn("", note=off.append) is None
  assert "perceptual loss off" in off[0]


def test_stage_two_on_a_released_format_tokenizer(tmp_path):
  config = test_train.tiny_config(stages=("transformer",), steps=2)
  from maskgit_jax import models  # pylint: disable=import-outside-toplevel
  tokenizer = models.tokenizer_from_config(config)
  shapes = release_params.shapes_of(
      tokenizer, jnp.zeros((1, 8, 8, tokenizer.channels)),
      method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x)))
  variables = release_params.fill(shapes, 7)
  path = tmp_path / "tokenizer_released"
  path.write_bytes(flax.serialization.to_bytes(variables))
  config.tokenizer_checkpoint = str(path)
  out = run.train_and_evaluate(config, str(tmp_path / "run"))
  assert (tmp_path / "run" / "samples.png").exists()
  assert not (tmp_path / "run" / "tokenizer").exists()
  assert "transformer" in out
  config.tokenizer_checkpoint = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="missing"):
    run.train_and_evaluate(config, str(tmp_path / "run2"))
