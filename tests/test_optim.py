"""Muon (`optimizer.name="muon"`): which weights it orthogonalises, what its
update is, and a sharded stage-2 run with it that resumes exactly."""
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from maskgit_jax.train_lib import optim
from maskgit_jax.train_lib import run
import test_train

DIMS = optax.contrib.MuonDimensionNumbers


def _params():
  boxed = nn.LogicallyPartitioned(jnp.ones((6, 4)), ("embed", "mlp"))
  return {
      "Dense_0": {"kernel": boxed, "bias": jnp.ones((4,))},
      "Layer": {"Mlp": {"kernel": jnp.ones((3, 6, 4))}},  # scanned: [L, in, out]
      "self_attention": {
          "query": {"kernel": jnp.ones((4, 2, 3)), "bias": jnp.ones((2, 3))},
          "out": {"kernel": jnp.ones((2, 3, 4)), "bias": jnp.ones((4,))}},
      "Conv_0": {"kernel": jnp.ones((3, 3, 2, 5))},
      "LayerNorm_0": {"scale": jnp.ones((4,)), "bias": jnp.ones((4,))},
      "Embed_0": {"word_embeddings": {"embedding": jnp.ones((5, 4))}},
      "quantizer": {"codebook": jnp.ones((8, 4))}}


def test_muon_takes_the_weight_matrices_and_adam_the_rest():
  dims = optim.muon_dimensions(_params())
  assert dims["Dense_0"]["kernel"] == DIMS(-2, -1)
  assert dims["Layer"]["Mlp"]["kernel"] == DIMS(-2, -1)
  assert dims["self_attention"]["query"]["kernel"] == DIMS(-3, (-2, -1))
  assert dims["self_attention"]["out"]["kernel"] == DIMS((-3, -2), -1)
  assert dims["Conv_0"]["kernel"] == DIMS((0, 1, 2), 3)
  for adam in (dims["Dense_0"]["bias"], dims["LayerNorm_0"],
               dims["Embed_0"], dims["quantizer"],
               dims["self_attention"]["query"]["bias"]):
    assert all(x is None for x in jax.tree.leaves(
        adam, is_leaf=lambda x: x is None)), adam


def test_muon_update_is_an_orthogonal_matrix_at_adams_scale():
  """The first update of a weight matrix is its gradient orthogonalised
  (singular values near 1) times lr * MUON_RMS * sqrt(max(in, out)); every
  other parameter gets Nesterov AdamW's update (no weight decay)."""
  lr = 0.01
  config = ml_collections.ConfigDict(dict(
      name="muon", lr=lr, b1=0.9, b2=0.99, weight_decay=0.1))
  tx, _ = optim.make_optimizer(config, 10)
  key = jax.random.key(0)
  params = {"mlp": {"kernel": jax.random.normal(key, (32, 64))},
            "emb": {"embedding": jax.random.normal(key, (5, 8))}}
  grads = jax.tree.map(
      lambda x: jax.random.normal(jax.random.key(1), x.shape), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  scale = lr * optim.MUON_RMS * np.sqrt(64)
  u = np.asarray(updates["mlp"]["kernel"])
  # Minus the decoupled weight decay (lr * wd * param), the rest is the
  # orthogonalised momentum: Newton-Schulz leaves singular values in about
  # [0.7, 1.2].
  ortho = -(u + lr * 0.1 * np.asarray(params["mlp"]["kernel"])) / scale
  s = np.linalg.svd(ortho, compute_uv=False)
  assert 0.6 < s.min() and s.max() < 1.3, s
  # Its directions are the gradient's: the orthogonal factor of its SVD.
  ug, _, vg = np.linalg.svd(np.asarray(grads["mlp"]["kernel"]),
                            full_matrices=False)
  cos = np.sum(ortho * (ug @ vg)) / (np.linalg.norm(ortho) *
                                     np.linalg.norm(ug @ vg))
  assert cos > 0.95, cos
  adam = optax.adamw(lr, b1=0.9, b2=0.99, weight_decay=0.0, nesterov=True)
  want, _ = adam.update(grads["emb"], adam.init(params["emb"]), params["emb"])
  np.testing.assert_allclose(updates["emb"]["embedding"], want["embedding"],
                             rtol=1e-6)


def test_unknown_optimizer_is_one_line():
  config = ml_collections.ConfigDict(dict(name="sgd", lr=1e-3))
  with pytest.raises(ValueError, match=r"optimizer.name='sgd' must be one "
                     r"of adam, adamw, muon"):
    optim.check_optimizer_config(config)


def test_muon_stage_two_sharded_equals_one_device_and_resumes(tmp_path):
  """The optimizer state (Muon's momentum beside masked Adam moments) is
  created sharded by the parameters' logical axes, a data / FSDP / tensor
  parallel run equals one device's, and a resumed run equals the
  uninterrupted one to the bit."""
  def train(name, mesh, devices=None, steps=3):
    config = test_train.tiny_config(stages=("transformer",), steps=steps)
    config.mesh = mesh
    config.transformer_training.batch_size = 16
    config.transformer_training.optimizer.name = "muon"
    config.transformer.hidden_dropout_prob = 0.0
    config.transformer.attention_probs_dropout_prob = 0.0
    tok = tmp_path / "tok"
    if not tok.exists():
      run.train_and_evaluate(test_train.tiny_config(stages=("tokenizer",),
                                                    steps=2), str(tok))
    workdir = tmp_path / name
    if not workdir.exists():
      shutil.copytree(tok / "tokenizer", workdir / "tokenizer")
    return run.train_and_evaluate(config, str(workdir),
                                  devices=devices)["transformer"]

  one = train("one", (1, 1, 1), jax.devices()[:1])
  adam_moved = train("tp", (2, 2, 2))
  for a, b in zip(test_train.leaves(one), test_train.leaves(adam_moved)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  # Resume: the 4-step run interrupted after its step-2 checkpoint.
  full = train("full", (2, 2, 2), steps=4)
  shutil.copytree(tmp_path / "full", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "transformer" / "checkpoints" / "4")
  resumed = train("resumed", (2, 2, 2), steps=4)
  for a, b in zip(test_train.leaves(full), test_train.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
