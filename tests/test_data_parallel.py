"""The data-parallel gradient in one all-reduce (train_lib/data_parallel.py):
where it applies, that it equals the plain gradient, that the compiled step
holds one all-reduce for the gradients, and the stage-1 steps (reconstruction,
GAN with R1 and LeCAM, the decoder-only phase with token noise and dead-code
restarts) equal on one and on eight simulated devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgit_jax.nets import factory
from maskgit_jax.train_lib import data_parallel
from maskgit_jax.train_lib import sharding as sharding_lib
from maskgit_jax.train_lib import tokenizer_task
from tests.test_train import tiny_config

NUM_LAYERS = 12


def _toy_params():
  keys = jax.random.split(jax.random.PRNGKey(0), NUM_LAYERS)
  return {f"layer{i}": {"w": jax.random.normal(k, (6, 6)) / 3,
                        "b": jnp.full((6,), 0.1 * i)}
          for i, k in enumerate(keys)}


def _toy_loss(params, x, y):
  h = x
  for i in range(NUM_LAYERS):
    h = jnp.tanh(h @ params[f"layer{i}"]["w"] + params[f"layer{i}"]["b"])
  err = jnp.sum((h - y) ** 2, -1)
  return jnp.mean(err), (h, jnp.mean(jnp.abs(h)))


def _toy_batch(n=16):
  x = jax.random.normal(jax.random.PRNGKey(1), (n, 6))
  return x, jnp.sin(x)


def _mesh(shape, devices=None):
  return sharding_lib.make_mesh(shape, devices)


@pytest.mark.parametrize("shape,expected", [
    ((8, 1, 1), "data"), ((2, 1, 1), "data"), ((1, 1, 1), None),
    ((2, 4, 1), None), ((4, 1, 2), None), ((1, 8, 1), None)])
def test_split_axis_only_on_a_data_parallel_cpu_mesh(shape, expected):
  assert data_parallel.split_axis() is None  # no mesh in scope
  devices = jax.devices()[:int(np.prod(shape))]
  with sharding_lib.mesh_context(_mesh(shape, devices)):
    assert data_parallel.split_axis() == expected


def _batch_sharded(tree, mesh):
  return jax.device_put(tree, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(sharding_lib.BATCH_AXES)))


def _run(fn_maker, mesh):
  params = _toy_params()
  x, y = _batch_sharded(_toy_batch(), mesh)
  with sharding_lib.mesh_context(mesh):
    compiled = jax.jit(fn_maker).lower(params, x, y).compile()
    return compiled(params, x, y), compiled.as_text()


def test_per_shard_gradient_equals_the_plain_one():
  mesh = _mesh((8, 1, 1))
  plain, _ = _run(lambda p, x, y: jax.value_and_grad(
      _toy_loss, has_aux=True)(p, x, y), mesh)
  split, _ = _run(lambda p, x, y: data_parallel.value_and_grad(
      _toy_loss, p, x, y), mesh)
  (loss_a, (h_a, m_a)), g_a = plain
  (loss_b, (h_b, m_b)), g_b = split
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
  np.testing.assert_allclose(m_a, m_b, rtol=1e-6)
  np.testing.assert_allclose(h_a, h_b, rtol=1e-6, atol=1e-7)
  for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_b)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # A loss that is not a mean of per-example terms takes the plain path.
  nonadditive, _ = _run(lambda p, x, y: data_parallel.value_and_grad(
      _toy_loss, p, x, y, additive=False), mesh)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(nonadditive)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _all_reduces(hlo_text):
  """The result shapes of the compiled program's all-reduce instructions."""
  return [line.split(" = ", 1)[1].split(" all-reduce(")[0]
          for line in hlo_text.splitlines() if " all-reduce(" in line]


def test_gradients_meet_in_one_all_reduce():
  mesh = _mesh((8, 1, 1))
  _, plain = _run(lambda p, x, y: jax.value_and_grad(
      _toy_loss, has_aux=True)(p, x, y)[1], mesh)
  _, split = _run(lambda p, x, y: data_parallel.value_and_grad(
      _toy_loss, p, x, y)[1], mesh)
  num_params = NUM_LAYERS * (6 * 6 + 6)
  operands = lambda text: sum(  # noqa: E731
      s.count("f32[") for s in _all_reduces(text))
  # XLA's partitioning: one reduced array per parameter array.
  assert operands(plain) >= 2 * NUM_LAYERS, _all_reduces(plain)
  # Per shard: the gradients' concatenation, once.
  flat = [s for s in _all_reduces(split) if f"f32[{num_params}]" in s]
  assert len(flat) == 1 and operands(split) == 1, _all_reduces(split)


def _tokenizer_steps(mesh, token_noise, num_steps=4):
  """The tokenizer task's first `num_steps` steps on `mesh` with the demo's
  GAN-phase pieces: 2 reconstruction steps (the second restarting dead
  codes), then 2 decoder-only steps (reading tokens swapped with
  probability `token_noise`) against a discriminator with R1 and LeCAM.
  Returns the final state's arrays and the last step's metrics."""
  config = tiny_config(stages=("tokenizer",), steps=num_steps)
  t = config.tokenizer_training
  t.batch_size = 16
  t.decoder_finetune_steps = 2
  t.disc_start_step = 2
  t.generator_adversarial_weight = 0.1
  t.lecam_weight = 0.001
  t.decoder_token_noise = token_noise
  t.decoder_token_noise_neighbours = 2
  t.codebook_restart_threshold = 0.5
  t.ema_decay = 0.9
  t.discriminator.max_filters = 16  # the demo's
  t.d_optimizer.b1 = 0.5
  tokenizer = factory.tokenizer_from_config(config)
  task = tokenizer_task.make_task(t, tokenizer, config.image_size,
                                  note=lambda m: None, perceptual=None)
  rng = np.random.default_rng(0)
  batches = [{"image": rng.uniform(size=(16, 8, 8, 1)).astype(np.float32)}
             for _ in range(num_steps)]
  with sharding_lib.mesh_context(mesh):
    state = jax.jit(task.init)(jax.random.PRNGKey(0))
    step = jax.jit(task.train_step, static_argnums=3)
    for i, batch in enumerate(batches):
      state, metrics = step(state, _batch_sharded(batch, mesh), None,
                            task.phase(i))
  return jax.tree.leaves(jax.device_get(state)), jax.device_get(metrics)


@pytest.mark.parametrize("token_noise", [0.5, 0.0])
def test_tokenizer_steps_equal_on_one_and_eight_devices(token_noise):
  one, one_metrics = _tokenizer_steps(_mesh((1, 1, 1), jax.devices()[:1]),
                                      token_noise)
  eight, eight_metrics = _tokenizer_steps(_mesh((8, 1, 1)), token_noise)
  assert len(one) == len(eight)
  for a, b in zip(one, eight):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  assert one_metrics["decoder_finetune"] == 1
  for key in ("loss", "discriminator_loss", "lecam_loss", "psnr"):
    np.testing.assert_allclose(one_metrics[key], eight_metrics[key],
                               rtol=1e-4, err_msg=key)
