"""Pieces of the training library: masking, perceptual loss, optimizer, durations."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgit_jax.libml import losses
from maskgit_jax.libml import mask_schedule
from maskgit_jax.nets import inception_weights
from maskgit_jax.train_lib import optim
from maskgit_jax.train_lib import periodic
from maskgit_jax.train_lib import config_checks
from maskgit_jax.train_lib import run
from maskgit_jax.train_lib import token_noise
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
    path = inception_weights.default_weights_path()
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"FID weights not installed (make test installs them): {e}")
  notes = []
  loss = tokenizer_task.perceptual_loss_fn(str(path), note=notes.append)
  assert loss is not None and not notes
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.rand(2, 16, 16, 1), jnp.float32)
  y = jnp.asarray(rs.rand(2, 16, 16, 1), jnp.float32)
  # One jitted program, compiled once and run twice: op-by-op, the
  # network's forward and backward took 2.3x as long (177 s against 78 s
  # here, compiling each op alone).
  value_and_grad = jax.jit(jax.value_and_grad(loss))
  same, _ = value_and_grad(x, x)
  value, grad = value_and_grad(x, y)
  assert float(same) == pytest.approx(0.0, abs=1e-6)
  assert float(value) > 1e-4
  assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0
  off = []
  assert tokenizer_task.perceptual_loss_fn("", note=off.append) is None
  assert "perceptual loss off" in off[0]


def test_stage_two_on_a_released_format_tokenizer(tmp_path):
  config = test_train.tiny_config(stages=("transformer",), steps=2)
  from maskgit_jax.nets import factory  # pylint: disable=import-outside-toplevel
  tokenizer = factory.tokenizer_from_config(config)
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


def test_training_mask_count_is_the_papers_ceiling():
  """n = ceil(N * gamma(r)): a fully masked grid (where every sample starts)
  occurs in training, ~11% of examples for the cosine schedule at N=64."""
  batch, n_tokens = 8192, 64
  rng = jax.random.PRNGKey(3)
  mask, n = mask_schedule.random_training_mask(rng, batch, n_tokens, "cosine")
  n = np.asarray(n)
  np.testing.assert_array_equal(np.asarray(mask).sum(-1), n)
  ratio = np.asarray(jax.random.uniform(jax.random.split(rng)[0], (batch,)))
  gamma = np.clip(np.cos(np.pi / 2 * ratio), 1e-6, 1.)
  expected = np.clip(np.ceil(np.round(n_tokens * gamma * 1e4) / 1e4), 1,
                     n_tokens)
  np.testing.assert_array_equal(n, expected)
  full = float(np.mean(n == n_tokens))
  # P(cos(pi r / 2) > 63/64) = arccos(63/64) * 2 / pi = 0.1126.
  assert 0.09 < full < 0.135, full


def test_min_mask_ratio_is_a_minimum_masked_fraction():
  """`min_mask_ratio` (the release's min_masking_rate) raises the masked
  fraction: never below it, and a fully masked grid still occurs."""
  mask, n = mask_schedule.random_training_mask(
      jax.random.PRNGKey(1), 4096, 64, "cosine", min_ratio=0.5)
  frac = np.asarray(n) / 64
  assert frac.min() >= 0.5
  assert frac.max() == 1.0
  assert np.mean(frac == 0.5) > 0.2  # the clip: P(cos(pi r/2) <= .5) = 1/3
  with pytest.raises(ValueError, match="min_mask_ratio=1.0"):
    mask_schedule.random_training_mask(jax.random.PRNGKey(1), 4, 64,
                                       "cosine", min_ratio=1.0)


def _tokenizer_task(config, note=lambda m: None):
  """`config`'s stage-1 task (durations at 256 steps an epoch), its initial
  state and a batch of 8 random 8x8 grey images (`tiny_config`'s)."""
  from maskgit_jax.nets import factory  # pylint: disable=import-outside-toplevel
  section = run.resolve_durations(config.tokenizer_training, 256,
                                  "tokenizer_training")
  task = tokenizer_task.make_task(
      section, factory.tokenizer_from_config(config), config.image_size,
      note=note)
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (8, 8, 8, 1))}
  return task, task.init(jax.random.PRNGKey(0)), batch


@pytest.mark.parametrize("optimizer", ["adam", "muon"])
def test_codebook_restart_resets_adam_moments_and_ema(optimizer):
  """A restarted codebook entry starts with fresh Adam moments, and its EMA
  copy (what stage 2 tokenises with) is the new entry; with Muon (the
  demo's stage 1) the codebook is among the parameters Adam updates."""
  config = test_train.tiny_config(stages=("tokenizer",))
  c = config.tokenizer_training
  c.g_optimizer.name = optimizer
  c.codebook_restart_threshold = 0.99  # restarts whatever is under-used
  c.ema_decay = 0.9
  c.generator_adversarial_weight = 0.0
  task, state, batch = _tokenizer_task(config)
  step = jax.jit(task.train_step)
  for _ in range(3):
    state, metrics = step(state, batch, None)
  codebook = np.asarray(state.params["quantizer"]["codebook"])
  ema = np.asarray(state.ema_params["quantizer"]["codebook"])
  # The entries restarted at the last step: their EMA copy is the new entry
  # itself (elsewhere it lags), as many as the step reports, and their
  # usage is reset to exactly 1 (a code used at exactly the expected rate
  # also stays at 1, so usage alone does not single them out).
  dead = np.all(ema == codebook, axis=-1)
  assert dead.sum() == int(metrics["restarted_codes"]) > 0 and not dead.all()
  np.testing.assert_array_equal(np.asarray(state.aux["usage"])[dead], 1.0)
  moments = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
      state.opt_state) if "codebook" in jax.tree_util.keystr(path)]
  assert len(moments) == 2  # Adam's mu and nu
  for m in moments:
    m = np.asarray(m)
    assert not np.any(m[dead]), "restarted entries keep old Adam moments"
    assert np.any(m[~dead])


def _top_level_convs(task, state, batch):
  jaxpr = jax.make_jaxpr(task.train_step)(state, batch, None).jaxpr

  def count(jp):  # Descends into pjit/custom calls, not into cond branches.
    n = 0
    for eqn in jp.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        n += 1
      elif eqn.primitive.name != "cond":
        for v in eqn.params.values():
          inner = getattr(v, "jaxpr", None)
          if inner is not None:
            n += count(getattr(inner, "jaxpr", inner))
    return n
  return count(jaxpr)


def test_no_discriminator_work_before_disc_start():
  """Before disc_start_step the discriminator (forward, R1, update) sits in
  a skipped `cond` branch: the step's unconditional convolutions are the
  tokenizer's alone, as without a GAN."""
  counts = {}
  for gan in (False, True):
    config = test_train.tiny_config(stages=("tokenizer",))
    c = config.tokenizer_training
    c.generator_adversarial_weight = 0.1 if gan else 0.0
    c.discriminator.max_filters = 8
    c.disc_start_step = 2
    task, state, batch = _tokenizer_task(config)
    counts[gan] = _top_level_convs(task, state, batch)
    if gan:  # The GAN still trains from disc_start_step on.
      step = jax.jit(task.train_step)
      d0 = np.asarray(jax.tree.leaves(state.aux["d_params"])[0])
      for _ in range(3):
        state, metrics = step(state, batch, None)
        if int(state.step) <= 2:
          np.testing.assert_array_equal(
              np.asarray(jax.tree.leaves(state.aux["d_params"])[0]), d0)
          assert float(metrics["discriminator_loss"]) == 0.0
      assert float(metrics["gan_active"]) == 1.0
      assert float(metrics["discriminator_loss"]) != 0.0
      assert not np.array_equal(
          np.asarray(jax.tree.leaves(state.aux["d_params"])[0]), d0)
  assert counts[True] == counts[False] > 0


def test_discriminator_conv3x3_equals_flax_conv():
  """The discriminator's patches @ kernel convolution is nn.Conv's function
  on nn.Conv's variables (it exists for XLA:CPU's speed only)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from maskgit_jax.nets import discriminator  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 5))
  variables = nn.Conv(7, (3, 3)).init(jax.random.PRNGKey(1), x)
  variables = jax.tree.map(
      lambda v: v + jax.random.normal(jax.random.PRNGKey(2), v.shape),
      variables)
  mine = discriminator.Conv3x3(7)
  assert (jax.tree.map(np.shape, mine.init(jax.random.PRNGKey(1), x)) ==
          jax.tree.map(np.shape, variables))
  np.testing.assert_allclose(mine.apply(variables, x),
                             nn.Conv(7, (3, 3)).apply(variables, x),
                             rtol=1e-5, atol=1e-5)
  images = jax.random.uniform(jax.random.PRNGKey(3), (2, 16, 16, 1))
  nets = [discriminator.Discriminator(max_filters=8, conv_as_matmul=m)
          for m in (False, True)]
  tree = nets[1].init(jax.random.PRNGKey(0), images)["params"]
  assert (jax.tree.map(np.shape, tree) == jax.tree.map(
      np.shape, nets[0].init(jax.random.PRNGKey(0), images)["params"]))
  np.testing.assert_allclose(nets[1].apply({"params": tree}, images),
                             nets[0].apply({"params": tree}, images),
                             rtol=1e-5, atol=1e-5)
  assert set(tree) == {"Conv_0", "Conv_1", "Dense_0", "Dense_1", "ResBlock_0",
                       "ResBlock_1"}
  assert set(tree["ResBlock_0"]) == {"Conv_0", "Conv_1", "Conv_2"}
  assert tree["ResBlock_0"]["Conv_1"]["kernel"].shape == (1, 1, 8, 8)
  one = discriminator.Conv1x1(3)
  w = one.init(jax.random.PRNGKey(4), x)
  np.testing.assert_allclose(
      one.apply(w, x), nn.Conv(3, (1, 1), use_bias=False).apply(w, x),
      rtol=1e-5, atol=1e-5)
  # The training config's default (None): the convolutions, on any backend.
  assert tokenizer_task.conv_as_matmul(None) is False
  assert tokenizer_task.conv_as_matmul(False) is False
  assert tokenizer_task.conv_as_matmul(True) is True


def test_discriminator_pads_other_sizes_to_a_power_of_two():
  """A 28x28 input (the demo's Fashion-MNIST pixels) is judged as the 32x32
  image with its edge pixels repeated: the variables of the 32x32 network,
  the same logits as on that image padded by hand; the release's sizes are
  not padded; sizes under 8 and non-square inputs are refused."""
  from maskgit_jax.nets import discriminator  # pylint: disable=import-outside-toplevel
  images = jax.random.uniform(jax.random.PRNGKey(5), (2, 28, 28, 1))
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)),
                  mode="edge")
  assert padded[0, 0, 0, 0] == images[0, 0, 0, 0]
  assert padded[0, 31, 15, 0] == images[0, 27, 13, 0]
  net = discriminator.Discriminator(max_filters=8)
  tree = net.init(jax.random.PRNGKey(0), images)["params"]
  assert (jax.tree.map(np.shape, tree) == jax.tree.map(
      np.shape, net.init(jax.random.PRNGKey(0), padded)["params"]))
  np.testing.assert_allclose(net.apply({"params": tree}, images),
                             net.apply({"params": tree}, padded),
                             rtol=1e-6, atol=1e-6)
  assert discriminator.pad_to_power_of_two(padded) is padded
  odd = discriminator.pad_to_power_of_two(jnp.zeros((1, 13, 13, 3)))
  assert odd.shape == (1, 16, 16, 3)
  for shape in ((1, 7, 7, 1), (1, 16, 12, 1)):
    with pytest.raises(ValueError, match="square with a side >= 8"):
      net.init(jax.random.PRNGKey(0), jnp.zeros(shape))


@pytest.mark.parametrize("filter_size", [3, 4, 5])
@pytest.mark.parametrize("size", [8, 7])
def test_blur_pool_is_the_depthwise_binomial_convolution(filter_size, size):
  """BlurPool2D's strided slices compute what the release's blur is: a
  depthwise convolution with the normalised binomial kernel, 'SAME' padding
  and stride 2 (here XLA's grouped convolution, and a numpy loop for the
  even filter's padding, one pixel before and one after at stride 2)."""
  from maskgit_jax.nets import discriminator  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.PRNGKey(size), (2, size, size, 3))
  taps = {3: [1., 2., 1.], 4: [1., 3., 3., 1.], 5: [1., 4., 6., 4., 1.]}
  taps = np.asarray(taps[filter_size])
  kernel = np.outer(taps, taps) / np.sum(taps) ** 2
  want = jax.lax.conv_general_dilated(
      x, jnp.tile(jnp.asarray(kernel)[:, :, None, None], (1, 1, 1, 3)),
      (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=3, precision=jax.lax.Precision.HIGHEST)
  got = discriminator.BlurPool2D(filter_size).apply({}, x)
  assert got.shape == want.shape == (2, (size + 1) // 2, (size + 1) // 2, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  if filter_size == 4 and size == 8:
    padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    loop = np.stack([np.stack([
        np.einsum("bhwc,hw->bc", padded[:, 2 * i:2 * i + 4, 2 * j:2 * j + 4],
                  kernel) for j in range(4)], 1) for i in range(4)], 1)
    np.testing.assert_allclose(got, loop, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="filter_size must be one of"):
    discriminator.BlurPool2D(2).apply({}, x)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_and_its_gradient_equal_the_log_softmax_form(smoothing):
  """The loss's own gradient (one pass over the logits) against JAX's
  differentiation of `-sum(targets * log_softmax(logits))`, weighted; large
  logits included (no overflow in either)."""
  def reference(logits, labels, weights):
    c = logits.shape[-1]
    targets = jax.nn.one_hot(labels, c) * (1 - smoothing) + smoothing / c
    loss = -jnp.sum(targets * jax.nn.log_softmax(logits), -1)
    return jnp.mean(jnp.sum(loss * weights, -1) /
                    jnp.maximum(jnp.sum(weights, -1), 1e-8))

  rs = np.random.RandomState(0)
  logits = jnp.asarray(rs.randn(3, 6, 11) * 5, jnp.float32)
  logits = logits.at[0, 0].add(1000.0)
  labels = jnp.asarray(rs.randint(0, 11, (3, 6)))
  weights = jnp.asarray(rs.rand(3, 6) > 0.3, jnp.float32)
  ours = jax.jit(jax.value_and_grad(
      lambda x: losses.smoothed_cross_entropy(x, labels, weights, smoothing)))
  ref = jax.jit(jax.value_and_grad(
      lambda x: reference(x, labels, weights)))
  (l1, g1), (l2, g2) = ours(logits), ref(logits)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)
  assert np.isfinite(np.asarray(g1)).all()


def test_decoder_finetune_phase_trains_the_decoder_alone():
  """The last `decoder_finetune_steps` steps update the decoder only, with
  `decoder_optimizer`'s learning rate: the encoder, the quantizer (codebook
  included) and stage 1's Adam state are those of the phase's first step,
  no code is restarted, and the GAN (from disc_start_step) still trains.
  Both the static phases (the trainer's) and the traced ones agree. A phase
  as long as the stage is dropped with a note; a negative one refused."""
  leaves = test_train.leaves
  config = test_train.tiny_config(stages=("tokenizer",))
  c = config.tokenizer_training
  c.num_steps = 4
  c.decoder_finetune_steps = 2
  c.decoder_optimizer.lr = 0.01
  c.generator_adversarial_weight = 0.1
  c.disc_start_step = 2
  c.discriminator.max_filters = 8
  c.codebook_restart_threshold = 1e9  # every code restarts at every step
  c.ema_decay = 0.9
  task, state, batch = _tokenizer_task(config)
  step = jax.jit(task.train_step)
  snapshots, log = [], []
  for _ in range(4):
    state, metrics = step(state, batch, None)
    snapshots.append(jax.device_get(state))
    log.append({k: float(v) for k, v in metrics.items()})
  assert [m["decoder_finetune"] for m in log] == [0, 0, 1, 1]
  assert [m["gan_active"] for m in log] == [0, 0, 1, 1]
  assert log[0]["restarted_codes"] > 0 and log[1]["restarted_codes"] > 0
  assert log[2]["restarted_codes"] == log[3]["restarted_codes"] == 0
  assert log[2]["g_learning_rate"] == log[3]["g_learning_rate"] == (
      np.float32(0.01))
  before, after = snapshots[1], snapshots[3]
  for part in ("encoder", "quantizer"):
    for x, y in zip(leaves(before.params[part]), leaves(after.params[part])):
      np.testing.assert_array_equal(x, y)
  for x, y in zip(leaves(before.opt_state), leaves(after.opt_state)):
    np.testing.assert_array_equal(x, y)
  assert not all(np.array_equal(x, y) for x, y in zip(
      leaves(before.params["decoder"]), leaves(after.params["decoder"])))
  assert not all(np.array_equal(x, y) for x, y in zip(
      leaves(before.aux["decoder_opt_state"]),
      leaves(after.aux["decoder_opt_state"])))
  assert not all(np.array_equal(x, y) for x, y in zip(
      leaves(before.aux["d_params"]), leaves(after.aux["d_params"])))
  # In the first phase everything trained (the decoder's optimizer idle).
  first = jax.device_get(task.init(jax.random.PRNGKey(0)))
  assert not all(np.array_equal(x, y) for x, y in zip(
      leaves(first.params["encoder"]), leaves(before.params["encoder"])))
  for x, y in zip(leaves(first.aux["decoder_opt_state"]),
                  leaves(before.aux["decoder_opt_state"])):
    np.testing.assert_array_equal(x, y)
  # The trainer's path: one compiled step per static phase, same result.
  assert [task.phase(i) for i in range(4)] == [(False, False)] * 2 + [
      (True, True)] * 2
  static = jax.jit(task.train_step, static_argnums=3)
  state = task.init(jax.random.PRNGKey(0))
  for i in range(4):
    state, _ = static(state, batch, None, task.phase(i))
  # The two programs fuse differently, and Adam's division by a tiny second
  # moment can magnify float rounding: on a 2-core AVX-512/AMX Xeon one
  # decoder weight of 2,304 differed by 1.8e-5 after the 4 steps. A wrong
  # phase moves the weights by about the learning rate (1e-2) a step.
  for x, y in zip(leaves(state), leaves(snapshots[3])):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)
  notes = []
  c.decoder_finetune_steps = 4  # a shortened run: no phase, and a note
  task, _, _ = _tokenizer_task(config, note=notes.append)
  assert task.phase(3) == (True, False)
  assert any("decoder_finetune_steps=4 is not below num_steps=4: no "
             "decoder-only phase" in n for n in notes)
  c.decoder_finetune_steps = -1
  with pytest.raises(ValueError, match=r"decoder_finetune_steps=-1 must not "
                     r"be negative"):
    _tokenizer_task(config)


def test_runs_recorded_before_the_decoder_phase_resume_and_bad_values():
  """The phase's fields default to None: a run whose config.json predates
  them has no difference to resume past (the ImageNet config's record
  without them), and a bad optimizer value stops with one line."""
  from maskgit_jax import cli  # pylint: disable=import-outside-toplevel
  from maskgit_jax.train_lib import config_record  # pylint: disable=import-outside-toplevel
  config = cli.load_config_file(str(test_train.ROOT / "configs" /
                                    "imagenet.py"))
  new = config.to_dict()
  old = config.to_dict()
  del old["tokenizer_training"]["decoder_finetune_steps"]
  del old["tokenizer_training"]["decoder_optimizer"]
  assert config_record.differences(old, new) == []
  assert tokenizer_task.decoder_optimizer_config(
      config.tokenizer_training).to_dict() == dict(
          name="adam", warmup_steps=0, lr_schedule="constant",
          grad_clip_norm=0.0, lr=1e-4, b1=0.5, b2=0.99)
  config.stages = ("tokenizer", "transformer")
  config.tokenizer_training.decoder_optimizer.b1 = 1.5
  with pytest.raises(ValueError, match=r"^tokenizer_training\."
                     r"decoder_optimizer\.b1=1\.5 must be a number in \[0, 1\)"):
    config_checks.check_config(config)


def test_decoder_gan_phase_helper_appends_the_phase():
  """defaults.decoder_gan_phase adds the phase after the recipe's steps
  (the GAN from its first step) with the demo's adversarial settings; the
  demo's config is that recipe; a duration string is refused."""
  from maskgit_jax.train_lib import defaults  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = defaults.cpu_recipe(ml_collections.ConfigDict(), tokenizer_steps=40,
                               transformer_steps=10, save_every=10)
  defaults.decoder_gan_phase(config, steps=15)
  t = config.tokenizer_training
  assert (t.num_steps, t.disc_start_step, t.decoder_finetune_steps) == (
      55, 40, 15)
  assert (t.generator_adversarial_weight, t.r1_cost, t.d_optimizer.b1,
          t.discriminator.max_filters) == (0.01, 0.0, 0.5, 16)
  demo = test_train.load_config().tokenizer_training
  assert (demo.num_steps, demo.disc_start_step,
          demo.decoder_finetune_steps) == (6000, 5000, 1000)
  t.num_steps = "2 epochs"
  with pytest.raises(ValueError, match="int num_steps, got '2 epochs'"):
    defaults.decoder_gan_phase(config, steps=15)


def test_perturb_tokens_swaps_for_near_codes_at_the_given_rate():
  """`token_noise.perturb_tokens`: probability 0 changes nothing, 1 changes
  every token to one of its k nearest other codes (brute force here; cosine for
  l2-normalised codes, Euclidean otherwise), and 0.3 about 30% of them."""
  codebook = jax.random.normal(jax.random.PRNGKey(0), (32, 4)) * jnp.array(
      [1.0, 2.0, 3.0, 4.0])
  ids = jax.random.randint(jax.random.PRNGKey(1), (64, 7, 7), 0, 32)
  rng = jax.random.PRNGKey(2)
  same = token_noise.perturb_tokens(codebook, ids, rng, 0.0, 4, True)
  np.testing.assert_array_equal(same, ids)
  for l2 in (True, False):
    codes = np.asarray(codebook, np.float64)
    if l2:
      codes /= np.linalg.norm(codes, axis=-1, keepdims=True)
    dist = ((codes[:, None] - codes[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, axis=-1)[:, :4]
    noisy = np.asarray(token_noise.perturb_tokens(codebook, ids, rng, 1.0,
                                                     4, l2))
    flat_ids, flat_noisy = np.asarray(ids).ravel(), noisy.ravel()
    assert (flat_noisy != flat_ids).all()
    assert all(n in nearest[i] for i, n in zip(flat_ids, flat_noisy))
    # Every one of the k neighbours is drawn.
    assert len(set(flat_noisy[flat_ids == flat_ids[0]].tolist())) == 4
  # The l2 and Euclidean neighbours differ for this codebook.
  assert not np.array_equal(
      token_noise.perturb_tokens(codebook, ids, rng, 1.0, 4, True),
      token_noise.perturb_tokens(codebook, ids, rng, 1.0, 4, False))
  some = token_noise.perturb_tokens(codebook, ids, rng, 0.3, 4, True)
  assert 0.25 < float(jnp.mean(some != ids)) < 0.35


def test_decoder_phase_token_noise_feeds_the_decoder_near_codes():
  """With `decoder_token_noise` the decoder-only steps decode perturbed
  tokens (another reconstruction loss; the reported codes and quantizer
  loss are still the clean tokens'); the steps before the phase, and the
  encoder and codebook, are those of a run without it; bad values stop with
  one line."""
  leaves = test_train.leaves

  def run_steps(noise):
    config = test_train.tiny_config(stages=("tokenizer",))
    c = config.tokenizer_training
    c.num_steps = 4
    c.decoder_finetune_steps = 2
    c.decoder_token_noise = noise
    c.decoder_token_noise_neighbours = 3
    task, state, batch = _tokenizer_task(config)
    step = jax.jit(task.train_step, static_argnums=3)
    states, log = [], []
    for i in range(4):
      state, metrics = step(state, batch, None, task.phase(i))
      states.append(jax.device_get(state))
      log.append({k: float(v) for k, v in metrics.items()})
    return states, log

  clean, clean_log = run_steps(None)
  noisy, noisy_log = run_steps(1.0)
  for x, y in zip(leaves(clean[1]), leaves(noisy[1])):
    np.testing.assert_array_equal(x, y)  # before the phase: untouched
  assert noisy_log[1] == clean_log[1]
  assert noisy_log[2]["reconstruction_loss"] != clean_log[2][
      "reconstruction_loss"]
  for key in ("perplexity", "quantizer_loss"):  # the clean tokens' figures
    assert noisy_log[2][key] == clean_log[2][key]
  for part in ("encoder", "quantizer"):
    for x, y in zip(leaves(clean[3].params[part]),
                    leaves(noisy[3].params[part])):
      np.testing.assert_array_equal(x, y)
  assert not all(np.array_equal(x, y) for x, y in zip(
      leaves(clean[3].params["decoder"]), leaves(noisy[3].params["decoder"])))
  config = test_train.tiny_config(stages=("tokenizer",))
  for key, value, message in (
      ("decoder_token_noise", 1.5, r"decoder_token_noise=1\.5 must be a "
       r"probability in \[0, 1\]"),
      ("decoder_token_noise", -0.1, r"decoder_token_noise=-0\.1 must be"),
      ("decoder_token_noise", "x", r"decoder_token_noise='x' must be"),
      ("decoder_token_noise_neighbours", 2.5,
       r"decoder_token_noise_neighbours=2\.5 must be an int"),
      ("decoder_token_noise_neighbours", 0,
       r"decoder_token_noise_neighbours=0 must be an int in \[1, "
       r"codebook_size - 1\]")):
    bad = test_train.tiny_config(stages=("tokenizer",))
    bad.tokenizer_training[key] = value
    with pytest.raises(ValueError, match="^tokenizer_training." + message):
      config_checks.check_config(bad)
  config.tokenizer_training.decoder_token_noise = 0.5
  config.tokenizer_training.decoder_token_noise_neighbours = (
      config.tokenizer.codebook_size or 10**6)
  with pytest.raises(ValueError, match=r"neighbours=\d+ must be an int in "
                     r"\[1, codebook_size - 1 = \d+\]"):
    _tokenizer_task(config)
