"""The VQGAN tokenizer: quantizer, straight-through estimator, release parity."""
import functools
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maskgit_jax.nets import factory
from maskgit_jax.nets import layers
from maskgit_jax.nets import quantizer_math
from maskgit_jax.nets import vqgan_tokenizer
import release_params


def roundtrip(m, x):
  return m.decode_from_indices(m.encode_to_indices(x))


def init(model, images):
  # Jitted here and below: op by op, a model's first run compiles each of
  # its hundreds of operations as a program of its own (2-3x the time).
  return nn.meta.unbox(jax.jit(lambda r, x: model.init(r, x, method=roundtrip))(
      jax.random.key(0), images))


@pytest.mark.parametrize("seed", range(3))
def test_quantizer_is_brute_force_nearest_neighbour(seed):
  rs = np.random.RandomState(seed)
  vq = vqgan_tokenizer.VectorQuantizer(codebook_size=37, embedding_dim=5)
  x = rs.randn(4, 6, 6, 5).astype(np.float32)
  variables = vq.init(jax.random.key(seed), x)
  codebook = np.asarray(variables["params"]["codebook"])
  quantized, result = vq.apply(variables, x)
  d = ((x[..., None, :] - codebook) ** 2).sum(-1)  # [4, 6, 6, 37]
  want = d.argmin(-1)
  np.testing.assert_array_equal(np.asarray(result["encoding_indices"]), want)
  np.testing.assert_array_equal(np.asarray(quantized), codebook[want])
  assert result["encoding_indices"].dtype == jnp.int32


def test_straight_through_gradient_is_identity():
  vq = vqgan_tokenizer.VectorQuantizer(codebook_size=8, embedding_dim=3)
  x = jnp.asarray(np.random.RandomState(0).randn(2, 3, 3, 3), jnp.float32)
  variables = vq.init(jax.random.key(0), x)
  weights = jnp.asarray(np.random.RandomState(1).randn(*x.shape), jnp.float32)

  def f(x):
    q, _ = vq.apply(variables, x, train=True)
    return jnp.sum(q * weights)

  np.testing.assert_allclose(np.asarray(jax.grad(f)(x)), np.asarray(weights),
                             rtol=1e-6)
  # In train mode the value is still the code vector (to rounding).
  q_train, _ = vq.apply(variables, x, train=True)
  q_eval, _ = vq.apply(variables, x, train=False)
  np.testing.assert_allclose(q_train, q_eval, atol=1e-6)


def test_vq_losses_follow_the_release_weights():
  vq = vqgan_tokenizer.VectorQuantizer(codebook_size=8, embedding_dim=3,
                                       entropy_loss_ratio=0.0)
  x = jnp.asarray(np.random.RandomState(0).randn(2, 3, 3, 3), jnp.float32)
  variables = vq.init(jax.random.key(0), x)
  q, r = vq.apply(variables, x)
  mse = float(jnp.mean((q - x) ** 2))
  assert float(r["q_latent_loss"]) == pytest.approx(mse, rel=1e-5)
  assert float(r["e_latent_loss"]) == pytest.approx(0.25 * mse, rel=1e-5)
  assert float(r["entropy_loss"]) == 0.0
  assert float(r["quantizer_loss"]) == pytest.approx(1.25 * mse, rel=1e-5)


def test_entropy_loss_is_weighted_and_finite():
  vq = vqgan_tokenizer.VectorQuantizer(codebook_size=8, embedding_dim=3)
  x = jnp.asarray(np.random.RandomState(0).randn(2, 3, 3, 3), jnp.float32)
  variables = vq.init(jax.random.key(0), x)
  _, r = vq.apply(variables, x)
  assert np.isfinite(float(r["entropy_loss"])) and float(r["entropy_loss"]) != 0


def test_codebook_stats():
  ids = jnp.asarray([[0, 0, 1, 1], [2, 2, 3, 3]])
  stats = vqgan_tokenizer.codebook_stats(ids, 8)
  assert float(stats["codebook_usage"]) == pytest.approx(0.5)
  assert float(stats["perplexity"]) == pytest.approx(4.0, rel=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_encode_decode_shapes(preset):
  model = vqgan_tokenizer.VQVAE.from_preset(preset)
  images = jnp.zeros((2, 32, 32, 3))
  variables = init(model, images)
  apply = lambda method, **kw: jax.jit(functools.partial(  # noqa: E731
      model.apply, method=method, **kw))
  ids = apply(model.encode_to_indices)(variables, images)
  f = model.downsample_factor
  assert ids.shape == (2, 32 // f, 32 // f) and ids.dtype == jnp.int32
  out = apply(model.decode_from_indices)(variables, ids)
  assert out.shape == (2, 32, 32, 3)
  recon, result = apply(None, train=True)(variables, images)
  assert recon.shape == images.shape
  assert set(result) >= {"quantizer_loss", "e_latent_loss", "q_latent_loss",
                         "entropy_loss", "encoding_indices"}


def test_factorised_l2_code_and_stats():
  model = vqgan_tokenizer.VQVAE.from_preset(
      "tiny", code_dim=3, l2_normalized=True, compute_stats=True)
  images = jnp.asarray(np.random.RandomState(0).rand(2, 8, 8, 3), jnp.float32)
  variables = init(model, images)
  params = variables["params"]["quantizer"]
  assert params["codebook"].shape == (16, 3)
  assert params["in_proj"]["kernel"].shape == (8, 3)
  assert params["out_proj"]["kernel"].shape == (3, 8)
  # Lookup is by cosine similarity in the projected space.
  feats = jax.jit(functools.partial(
      model.apply, method=lambda m, x: m.encoder(x)))(variables, images)
  z = np.asarray(feats) @ np.asarray(params["in_proj"]["kernel"]) + np.asarray(
      params["in_proj"]["bias"])
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  c = np.array(params["codebook"])
  c /= np.linalg.norm(c, axis=-1, keepdims=True)
  ids = jax.jit(functools.partial(model.apply,
                                  method=model.encode_to_indices))(
                                      variables, images)
  np.testing.assert_array_equal(np.asarray(ids), (z @ c.T).argmax(-1))
  _, result = jax.jit(model.apply)(variables, images)
  assert 0 < float(result["codebook_usage"]) <= 1
  assert 1 <= float(result["perplexity"]) <= 16


def test_release_shortcut_quirk_and_textbook_option():
  images = jnp.zeros((1, 8, 8, 3))
  quirk = init(vqgan_tokenizer.VQVAE.from_preset("tiny"), images)
  plain = init(vqgan_tokenizer.VQVAE.from_preset("tiny", release_shortcut=False),
               images)
  # Encoder level 2 goes from 8 to 16 channels: ResBlock_1 has the shortcut.
  assert quirk["params"]["encoder"]["ResBlock_1"]["Conv_2"]["kernel"].shape == (
      1, 1, 16, 16)
  assert plain["params"]["encoder"]["ResBlock_1"]["Conv_2"]["kernel"].shape == (
      1, 1, 8, 16)


def test_matches_release_outputs(data_dir):
  """Same parameters, same inputs as the released code -> same outputs."""
  ref = np.load(data_dir / "release_model_parity.npz")
  model = vqgan_tokenizer.VQVAE(num_groups=32, **release_params.TOKENIZER)
  images = ref["images"]
  variables = release_params.fill(
      release_params.shapes_of(model, images, method=roundtrip), seed=1000)
  ids = model.apply(variables, images, method=model.encode_to_indices)
  np.testing.assert_array_equal(np.asarray(ids), ref["ids"])
  decoded = model.apply(variables, ref["given_ids"],
                        method=model.decode_from_indices)
  np.testing.assert_allclose(np.asarray(decoded), ref["decoded"], rtol=1e-4,
                             atol=1e-4)


def test_unknown_preset_and_activation():
  with pytest.raises(ValueError, match="preset"):
    vqgan_tokenizer.VQVAE.from_preset("huge")
  model = vqgan_tokenizer.VQVAE.from_preset("tiny", activation="tanh")
  with pytest.raises(ValueError, match="activation"):
    init(model, jnp.zeros((1, 8, 8, 3)))


def _corner_sensitivity(model, variables, images):
  """|d feature(token 0,0) / d pixel| summed over the pixels of its own 4x4
  patch and over those more than 8 pixels away from it."""
  def corner(x):
    return model.apply(variables, x, method=lambda m, y: m.encoder(y))[
        0, 0, 0].sum()
  grad = np.abs(np.asarray(jax.jit(jax.grad(corner))(images)))[0].sum(-1)
  return grad[:4, :4].sum(), grad[12:, 12:].sum()


def test_encoder_spatial_levels_make_tokens_local():
  images = jnp.asarray(np.random.RandomState(0).rand(1, 28, 28, 1), jnp.float32)
  ratios = {}
  for levels in (None, 1):
    model = vqgan_tokenizer.VQVAE.from_preset(
        "small", channels=1, encoder_spatial_levels=levels)
    variables = init(model, images)
    blocks = variables["params"]["encoder"]
    # Level 0 keeps its 3x3 kernels; levels 1, 2 and the middle block
    # (ResBlock_1..3) have 1x1 kernels with 1 (the same count of variables).
    assert blocks["ResBlock_0"]["Conv_0"]["kernel"].shape[:2] == (3, 3)
    want = (3, 3) if levels is None else (1, 1)
    for name in ("ResBlock_1", "ResBlock_2", "ResBlock_3"):
      assert blocks[name]["Conv_1"]["kernel"].shape[:2] == want
    near, far = _corner_sensitivity(model, variables, images)
    ratios[levels] = far / near
  # The release's encoder sees most of a 28x28 image from every token (at
  # initialisation the 256 far pixels move the corner token 3.8x as much as
  # its own 16); with 3x3 kernels only at full resolution the far pixels
  # reach it only through GroupNorm's per-image statistics (0.40x).
  assert ratios[None] > 1.0
  assert ratios[1] < 0.25 * ratios[None]


def test_encoder_spatial_levels_past_the_last_level_is_the_release_encoder():
  # The small preset has 3 resolution levels and a middle block (level 3):
  # 4 or more levels keep every 3x3 kernel, the same variables and outputs
  # as None (how `--config.tokenizer.encoder_spatial_levels=99` undoes
  # configs/folder.py's 1 from the command line).
  images = jnp.asarray(np.random.RandomState(1).rand(2, 28, 28, 1), jnp.float32)
  release = vqgan_tokenizer.VQVAE.from_preset("small", channels=1)
  variables = init(release, images)
  want = jax.jit(functools.partial(release.apply,
                                   method=release.encode_to_indices))(
                                       variables, images)
  for levels in (4, 99):
    model = vqgan_tokenizer.VQVAE.from_preset(
        "small", channels=1, encoder_spatial_levels=levels)
    assert (jax.tree_util.tree_map(jnp.shape, init(model, images)) ==
            jax.tree_util.tree_map(jnp.shape, variables))
    got = jax.jit(functools.partial(model.apply,
                                    method=model.encode_to_indices))(
                                        variables, images)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  model = vqgan_tokenizer.VQVAE.from_preset(
      "small", channels=1, encoder_spatial_levels=3)
  assert (init(model, images)["params"]["encoder"]["ResBlock_3"]["Conv_0"]
          ["kernel"].shape[:2] == (1, 1))


@pytest.mark.parametrize("shape,groups", [((3, 7, 7, 64), 8), ((2, 28, 28, 16), 8),
                                          ((2, 5, 5, 32), 32), ((4, 6, 8), 2)])
def test_matmul_group_norm_equals_flax(shape, groups):
  """layers.GroupNorm (the statistics as matrix-vector products): flax's
  variables, values and gradients to float32 rounding."""
  x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), shape)
  ref = nn.GroupNorm(num_groups=groups)
  ours = layers.GroupNorm(num_groups=groups)
  variables = jax.jit(ref.init)(jax.random.PRNGKey(1), x)
  variables = jax.tree.map(
      lambda v: v + 0.1 * jax.random.normal(jax.random.PRNGKey(2), v.shape),
      variables)
  assert (jax.tree.map(jnp.shape, jax.eval_shape(ours.init,
                                                 jax.random.PRNGKey(1), x)) ==
          jax.tree.map(jnp.shape, variables))
  target = jax.random.normal(jax.random.PRNGKey(3), shape)
  loss = lambda m: lambda v, x: jnp.sum(m.apply(v, x) * target)  # noqa: E731
  np.testing.assert_allclose(jax.jit(ours.apply)(variables, x),
                             jax.jit(ref.apply)(variables, x), rtol=1e-5,
                             atol=2e-5)
  got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(variables, x)
  want = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(variables, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_matmul_group_norm_tokenizer_has_the_release_variables():
  """`group_norm="matmul"` changes how, not what: the same variable tree,
  and reconstructions equal to float rounding; a bad value is one line."""
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3))
  reduce = vqgan_tokenizer.VQVAE.from_preset("tiny")
  matmul = vqgan_tokenizer.VQVAE.from_preset("tiny", group_norm="matmul")
  variables = jax.jit(reduce.init)(jax.random.PRNGKey(1), images)
  assert (jax.tree.map(jnp.shape, jax.eval_shape(
      matmul.init, jax.random.PRNGKey(1), images))
          == jax.tree.map(jnp.shape, variables))
  np.testing.assert_allclose(jax.jit(matmul.apply)(variables, images)[0],
                             jax.jit(reduce.apply)(variables, images)[0],
                             rtol=1e-4, atol=1e-5)
  config = ml_collections.ConfigDict(dict(tokenizer=dict(
      preset="tiny", group_norm="fast")))
  with pytest.raises(ValueError, match=r"^config.tokenizer.group_norm='fast': "
                     r"expected one of \('reduce', 'matmul'\)"):
    factory.tokenizer_from_config(config)


def test_rotation_trick_value_is_the_code_and_gradient_is_rotated():
  """The rotation trick: the forward value is `q`; the gradient reaching `z`
  is `|q|/|z| R^T g` with `R` the rotation taking `z^` to `q^` (built here
  from its definition), so it keeps `g`'s norm up to that ratio and is not
  the straight-through copy."""
  kz, kq, kg = jax.random.split(jax.random.key(0), 3)
  z = jax.random.normal(kz, (6, 16))
  q = 2.0 * jax.random.normal(kq, (6, 16))
  g = jax.random.normal(kg, (6, 16))
  np.testing.assert_allclose(quantizer_math.rotation_trick(z, q), q,
                             atol=5e-6)
  grad = jax.grad(
      lambda z: jnp.sum(quantizer_math.rotation_trick(z, q) * g))(z)
  for zi, qi, gi, got in zip(*map(np.asarray, (z, q, g, grad))):
    z_hat, q_hat = zi / np.linalg.norm(zi), qi / np.linalg.norm(qi)
    r = (z_hat + q_hat) / np.linalg.norm(z_hat + q_hat)
    rot = np.eye(16) - 2 * np.outer(r, r) + 2 * np.outer(q_hat, z_hat)
    np.testing.assert_allclose(rot @ rot.T, np.eye(16), atol=1e-5)
    np.testing.assert_allclose(rot @ z_hat, q_hat, atol=1e-5)
    scale = np.linalg.norm(qi) / np.linalg.norm(zi)
    np.testing.assert_allclose(got, scale * rot.T @ gi, rtol=1e-4, atol=1e-5)
    assert np.abs(got - gi).max() > 0.1  # not straight-through
  # A code equal to its feature: the identity, as straight-through.
  grad_same = jax.grad(
      lambda z: jnp.sum(quantizer_math.rotation_trick(z, z + 0.0) * g))(z)
  np.testing.assert_allclose(grad_same, g, rtol=1e-5, atol=1e-5)


def test_rotation_trick_tokenizer_trains_the_same_variables():
  """`quantizer_gradient="rotation"`: the release's variable tree, the same
  reconstructions and losses in the forward pass, other encoder gradients;
  a bad value is one line."""
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3))
  kw = dict(code_dim=4, l2_normalized=True)
  plain = vqgan_tokenizer.VQVAE.from_preset("tiny", **kw)
  rotated = vqgan_tokenizer.VQVAE.from_preset(
      "tiny", quantizer_gradient="rotation", **kw)
  variables = jax.jit(plain.init)(jax.random.PRNGKey(1), images)
  assert (jax.tree.map(jnp.shape, jax.eval_shape(
      rotated.init, jax.random.PRNGKey(1), images))
          == jax.tree.map(jnp.shape, variables))

  def loss(model):
    def fn(params):
      out, result = model.apply({"params": params}, images, train=True)
      return jnp.mean((out - images) ** 2) + result["quantizer_loss"]
    return jax.jit(jax.value_and_grad(fn))

  (value_p, grad_p), (value_r, grad_r) = (
      loss(m)(variables["params"]) for m in (plain, rotated))
  np.testing.assert_allclose(value_r, value_p, rtol=1e-5)
  # The decoder sees the same codes: its gradients agree; the encoder's not.
  for a, b in zip(jax.tree.leaves(grad_r["decoder"]),
                  jax.tree.leaves(grad_p["decoder"])):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)
  enc_r, enc_p = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(
      g["encoder"])]) for g in (grad_r, grad_p))
  assert np.abs(enc_r - enc_p).max() > 1e-3 * np.abs(enc_p).max()
  config = ml_collections.ConfigDict(dict(tokenizer=dict(
      preset="tiny", quantizer_gradient="rotate")))
  with pytest.raises(ValueError, match=r"^config.tokenizer.quantizer_gradient="
                     r"'rotate': expected one of \('straight_through', "
                     r"'rotation'\)"):
    factory.tokenizer_from_config(config)
  with pytest.raises(ValueError, match=r"VectorQuantizer.gradient='rotate'"):
    vqgan_tokenizer.VQVAE.from_preset(
        "tiny", quantizer_gradient="rotate").init(jax.random.PRNGKey(1), images)


def test_commitment_cost_is_a_number_at_least_zero():
  """The demo lowers the commitment cost (0.05); a negative or non-finite
  one would push features away from their codes: one line at the factory."""
  ok = factory.tokenizer_from_config(ml_collections.ConfigDict(dict(
      tokenizer=dict(preset="tiny", commitment_cost=0.05))))
  assert ok.commitment_cost == 0.05
  for bad in (-0.1, float("nan"), float("inf")):
    config = ml_collections.ConfigDict(dict(tokenizer=dict(
        preset="tiny", commitment_cost=bad)))
    with pytest.raises(ValueError, match=r"^config.tokenizer.commitment_cost"
                       r"=.* must be a finite number >= 0"):
      factory.tokenizer_from_config(config)


def test_spatial_self_attention_is_softmax_attention_plus_the_input():
  rs = np.random.RandomState(0)
  x = rs.randn(2, 3, 4, 8).astype(np.float32)
  block = layers.SpatialSelfAttention(num_groups=2)
  variables = block.init(jax.random.key(1), x)
  p = jax.tree_util.tree_map(np.asarray, variables["params"])
  # Reference: GroupNorm (2 groups of 4 channels), then one head over the 12
  # positions.
  g = x.reshape(2, 12, 2, 4)
  y = (g - g.mean((1, 3), keepdims=True)) / np.sqrt(
      g.var((1, 3), keepdims=True) + 1e-6)
  y = y.reshape(2, 12, 8) * p["GroupNorm_0"]["scale"] + p["GroupNorm_0"]["bias"]
  dense = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
  q, k, v = (dense(n, y) for n in ("query", "key", "value"))
  logits = q @ k.transpose(0, 2, 1) / np.sqrt(8)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  want = x + dense("out", w @ v).reshape(x.shape)
  np.testing.assert_allclose(np.asarray(block.apply(variables, x)), want,
                             rtol=1e-4, atol=1e-4)


def test_decoder_attention_adds_one_block_and_starts_as_the_release_decoder():
  images = jnp.asarray(np.random.RandomState(0).rand(2, 16, 16, 1), jnp.float32)
  plain = vqgan_tokenizer.VQVAE.from_preset("small", channels=1)
  attn = vqgan_tokenizer.VQVAE.from_preset("small", channels=1,
                                           decoder_attention=True)
  flat = lambda v: {"/".join(k): a for k, a in  # noqa: E731
                    flax.traverse_util.flatten_dict(v["params"]).items()}
  p_plain, p_attn = flat(init(plain, images)), flat(init(attn, images))
  added = sorted(set(p_attn) - set(p_plain))
  assert set(p_plain) < set(p_attn)
  assert added and all(k.startswith("decoder/MidAttention/") for k in added)
  # With the block's output projection at zero it is the identity: the
  # decoder is then the release's on the same variables.
  params = {k: (jnp.zeros_like(p_attn[k]) if k.startswith(
      "decoder/MidAttention/out/") else p_plain.get(k, p_attn[k]))
            for k in p_attn}
  unflat = lambda d: {"params": flax.traverse_util.unflatten_dict(  # noqa: E731
      {tuple(k.split("/")): a for k, a in d.items()})}
  plain_rt = jax.jit(functools.partial(plain.apply, method=roundtrip))
  attn_rt = jax.jit(functools.partial(attn.apply, method=roundtrip))
  want = plain_rt(unflat(p_plain), images)
  got = attn_rt(unflat(params), images)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
  # With its initial variables the block changes the images.
  other = attn_rt(unflat({k: p_plain.get(k, p_attn[k]) for k in p_attn}),
                  images)
  assert float(jnp.abs(other - want).max()) > 1e-4
