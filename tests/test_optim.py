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

from maskgit_jax.train_lib import muon
from maskgit_jax.train_lib import optim
from maskgit_jax.train_lib import run
from maskgit_jax.train_lib import sharding as sharding_lib
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


def _matrices():
  """Weights of several shapes: some alike (stacked into one product),
  one flipped (more inputs than outputs), one scanned, one convolution."""
  key = jax.random.key(3)
  shapes = {"a": (16, 24), "b": (16, 24), "c": (40, 8), "d": (3, 8, 12),
            "conv": (3, 3, 4, 6), "e": (12, 20)}
  params = {k: {"kernel": jax.random.normal(jax.random.fold_in(key, i), s)}
            for i, (k, s) in enumerate(shapes.items())}
  params["norm"] = {"scale": jnp.ones((6,))}
  return params


@pytest.mark.parametrize("devices", [1, 2, 8])
def test_muon_split_between_devices_equals_optax(devices):
  """Three updates of our Muon (the Newton-Schulz iterations dealt out to
  the devices of a data-parallel mesh, same-shaped matrices stacked) equal
  optax's `contrib.muon` to float32 rounding, with optax's state layout."""
  params = _matrices()
  grads = [jax.tree.map(lambda x, i=i: jax.random.normal(
      jax.random.key(10 + i), x.shape), params) for i in range(3)]
  kwargs = dict(weight_decay=0.01, adam_b1=0.9, adam_b2=0.99,
                consistent_rms=optim.MUON_RMS)
  ref = optax.contrib.muon(1e-2, muon_weight_dimension_numbers=(
      optim.muon_dimensions), **kwargs)
  ours = muon.muon(1e-2, dims_fn=optim.muon_dimensions, eps=1e-8, **kwargs)
  assert (jax.tree.structure(ref.init(params)) ==
          jax.tree.structure(ours.init(params)))
  mesh = sharding_lib.make_mesh((devices, 1, 1), jax.devices()[:devices])

  def steps(tx):
    state, p, jaxpr = tx.init(params), params, None
    update = jax.jit(tx.update)
    with sharding_lib.mesh_context(mesh):
      jaxpr = str(jax.make_jaxpr(tx.update)(grads[0], state, p))
      for g in grads:
        u, state = update(g, state, p)
        p = optax.apply_updates(p, u)
    return p, jaxpr

  want, _ = steps(ref)
  got, jaxpr = steps(ours)
  # Split only where there are devices to split between.
  assert ("all_gather" in jaxpr) == (devices > 1)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_muon_deals_the_largest_matrices_first_to_the_least_loaded():
  assert muon._deal([5, 4, 3, 3, 1], 2) == [[0, 3], [1, 2, 4]]
  assert muon._deal([1, 1], 4) == [[0], [1], [], []]


def test_newton_schulz_is_optax_iteration():
  """The constants are optax's defaults, and our iterations on a normalised
  matrix give optax's `scale_by_muon` update (whose first update is the
  gradient normalised and orthogonalised)."""
  x = jax.random.normal(jax.random.key(0), (12, 20))
  tx = optax.contrib.scale_by_muon()
  state = tx.init(x)
  np.testing.assert_array_equal(state.ns_coeffs, np.float32(muon.NS_COEFFS))
  want, _ = tx.update(x, state)
  got = muon.newton_schulz((x / (jnp.linalg.norm(x) + 1e-8))[None])[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


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

  one = train("one", (1, 1, 1), jax.devices()[:1], steps=4)
  full = train("full", (2, 2, 2), steps=4)
  for a, b in zip(test_train.leaves(one), test_train.leaves(full)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  # Resume: the sharded run interrupted after its step-2 checkpoint.
  shutil.copytree(tmp_path / "full", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "transformer" / "checkpoints" / "4")
  resumed = train("resumed", (2, 2, 2), steps=4)
  for a, b in zip(test_train.leaves(full), test_train.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
