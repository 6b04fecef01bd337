"""Rematerialisation (`remat` of both models) and scanned transformer layers:
the same variables (or their stacked layout), function and gradients under
every policy, fewer saved activations, and a bad policy as one config error.
Training with both, and exporting to the release's layout:
test_train.py::test_both_stages_end_to_end."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgit_jax.nets import factory
from maskgit_jax.nets import layer_stack
from maskgit_jax.nets import layers
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer
import test_train

POLICIES = layers.REMAT_POLICIES


def transformer(policy, **kw):
  return maskgit_transformer.Transformer.from_preset(
      "tiny", codebook_size=16, num_classes=3, latent_size=4, remat=policy,
      hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **kw)


def loss_and_grads(model, variables, inputs, **kwargs):
  def loss(params):
    out = model.apply({**variables, "params": params}, inputs, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    return jnp.sum(jnp.sin(out))
  return jax.jit(jax.value_and_grad(loss))(variables["params"])


def check_same(build, inputs, **kwargs):
  """Every policy: the variables of "none", its loss and its gradients."""
  base = build("none")
  want = jax.jit(base.init)(jax.random.key(0), inputs)
  want_loss, want_grads = loss_and_grads(base, want, inputs, **kwargs)
  for policy in POLICIES[1:]:
    model = build(policy)
    # The same names and shapes, hence the same initial values (flax folds
    # each variable's path into the key).
    got = jax.eval_shape(model.init, jax.random.key(0), inputs)
    assert jax.tree.structure(got) == jax.tree.structure(want), policy
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert a.shape == b.shape, policy
    loss, grads = loss_and_grads(model, want, inputs, **kwargs)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6, err_msg=policy)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=policy)


def test_transformer_remat_keeps_variables_and_gradients():
  ids = jnp.arange(2 * 17).reshape(2, 17) % 20
  # Dropout on: the recomputed forward must draw the same masks.
  check_same(transformer, ids, deterministic=False,
             rngs={"dropout": jax.random.key(1)})


def test_tokenizer_remat_keeps_variables_and_gradients():
  build = lambda p: vqgan_tokenizer.VQVAE(  # noqa: E731
      filters=4, channel_multipliers=(1, 2), num_res_blocks=1,
      embedding_dim=4, codebook_size=8, channels=1, num_groups=2, remat=p)
  images = jax.random.uniform(jax.random.key(2), (1, 4, 4, 1))
  check_same(build, images)


def residual_bytes(policy):
  """Bytes autodiff keeps for the backward pass (JAX level, arguments
  excluded): what rematerialisation trades for recomputation. XLA's own
  figure is benchmarks/compile_memory.py's."""
  from jax._src.ad_checkpoint import saved_residuals  # pylint: disable=import-outside-toplevel
  model = maskgit_transformer.Transformer(
      vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
      intermediate_size=128, max_position_embeddings=65,
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, remat=policy)
  ids = jnp.zeros((2, 65), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
  loss = lambda p: jnp.sum(model.apply({"params": p}, ids))  # noqa: E731
  return sum(int(np.prod(aval.shape)) * np.dtype(aval.dtype).itemsize
             for aval, why in saved_residuals(loss, params)
             if "from the argument" not in why)


def test_remat_keeps_fewer_activations():
  none, minimal, full = (residual_bytes(p) for p in POLICIES)
  assert full < minimal < none, (none, minimal, full)
  assert full < 0.25 * none, (none, full)


def test_config_selects_the_policy_and_rejects_others():
  config = test_train.tiny_config()
  config.transformer.remat = "full"
  config.tokenizer.remat = "minimal"
  assert factory.transformer_from_config(config).remat == "full"
  assert factory.tokenizer_from_config(config).remat == "minimal"
  config.transformer.remat = "most"
  with pytest.raises(ValueError, match=r"config.transformer.remat='most'"):
    factory.transformer_from_config(config)


def test_scanned_layers_compute_the_release_layout_function():
  """The same weights, stacked, give the same logits and (stacked) gradients;
  the layouts convert both ways exactly."""
  ids = jnp.arange(2 * 17).reshape(2, 17) % 20
  plain = transformer("none")
  params = nn.meta.unbox(jax.jit(plain.init)(jax.random.key(0), ids)["params"])
  stacked = layer_stack.stack(params)
  assert set(stacked) == {"Embed_0", "MlmLayer_0", layer_stack.STACK}
  for a, b in zip(jax.tree.leaves(layer_stack.unstack(stacked)),
                  jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  loss = lambda m, p: jnp.sum(jnp.sin(m.apply({"params": p}, ids)))  # noqa
  want, want_grads = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(
      params)
  for policy in POLICIES:
    scanned = transformer(policy, scan_layers=True)
    shapes = nn.meta.unbox(
        jax.eval_shape(scanned.init, jax.random.key(0), ids)["params"])
    assert jax.tree.structure(shapes) == jax.tree.structure(stacked)
    got, grads = jax.jit(jax.value_and_grad(lambda p, m=scanned: loss(m, p)))(
        stacked)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(layer_stack.unstack(grads)),
                    jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_tree_that_cannot_be_stacked_is_left_for_the_tree_check():
  params = {"Embed_0": {"a": np.zeros(2)},
            "TransformerLayer_0": {"k": np.zeros((2, 2))},
            "TransformerLayer_1": {"k": np.zeros((3, 2))}}
  gap = {"TransformerLayer_1": {"k": np.zeros(2)}}
  for tree in (params, gap):
    out = layer_stack.stack(tree)
    assert set(out) == set(tree)
    assert all(out[k] is tree[k] for k in tree)
