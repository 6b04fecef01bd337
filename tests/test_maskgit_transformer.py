"""The bidirectional transformer: release parity, mask token, presets' trees."""
import functools
import json

import flax
import flax.linen as nn
import jax
import jax.extend.core  # pylint: disable=unused-import
import jax.numpy as jnp
import numpy as np
import pytest

from maskgit_jax.nets import attention
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer
import release_params


def flat_shapes(tree):
  return {"/".join(k): list(v.shape)
          for k, v in flax.traverse_util.flatten_dict(tree).items()}


@pytest.mark.parametrize("size", [256, 512])
def test_imagenet_presets_equal_released_trees(size, data_dir):
  ref = json.loads((data_dir / "maskgit_official_param_shapes.json").read_text())
  tok = vqgan_tokenizer.VQVAE.from_preset("imagenet")
  images = jnp.zeros((1, size, size, 3))
  tok_tree = flat_shapes(release_params.shapes_of(
      tok, images,
      method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x))))
  assert tok_tree == ref[f"tokenizer{size}"]
  assert sum(np.prod(s) for s in tok_tree.values()) == ref["param_counts"][
      f"tokenizer{size}"] == 54_515_587

  tr = maskgit_transformer.Transformer.from_preset(size)
  ids = jnp.zeros((1, (size // 16) ** 2 + 1), jnp.int32)
  tr_tree = flat_shapes(release_params.shapes_of(tr, ids))
  assert tr_tree == ref[f"transformer{size}"]
  assert sum(np.prod(s) for s in tr_tree.values()) == ref["param_counts"][
      f"transformer{size}"]


def tiny():
  model = maskgit_transformer.Transformer.from_preset("tiny")
  ids = jnp.zeros((2, 17), jnp.int32)
  # Jitted here and below: op by op, a model's first run compiles each of
  # its hundreds of operations as a program of its own.
  return model, nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids))


def test_vocab_layout_and_output_shape():
  model, variables = tiny()
  assert model.vocab_size == 16 + 3 + 1
  assert model.max_position_embeddings == 17
  logits = jax.jit(model.apply)(variables, jnp.zeros((2, 17), jnp.int32))
  assert logits.shape == (2, 17, 20) and logits.dtype == jnp.float32


def test_mask_token_minus_one_is_the_last_embedding_row():
  model, variables = tiny()
  apply = jax.jit(model.apply)
  rs = np.random.RandomState(0)
  ids = rs.randint(0, 16, (2, 17)).astype(np.int32)
  ids[:, 0] = 16 + 1
  with_minus_one = ids.copy()
  with_minus_one[:, 3:9] = -1
  with_last_row = ids.copy()
  with_last_row[:, 3:9] = model.vocab_size - 1
  np.testing.assert_array_equal(apply(variables, with_minus_one),
                                apply(variables, with_last_row))
  assert not np.allclose(apply(variables, with_minus_one), apply(variables, ids))


def test_image_logits_equal_the_sliced_full_logits():
  """`image_logits=k` (the training loss's form) is `logits[:, 1:, :k]`,
  computed without the rest, and its gradient is the sliced one's."""
  model, variables = tiny()
  rs = np.random.RandomState(1)
  # Random variables: the bias and embeddings must matter.
  variables = jax.tree.map(
      lambda x: jnp.asarray(rs.randn(*x.shape), x.dtype) * 0.1, variables)
  ids = rs.randint(0, 16, (2, 17)).astype(np.int32)
  ids[:, 0] = 16 + 2
  ids[:, 5:11] = -1
  full = jax.jit(model.apply)(variables, ids)
  part = jax.jit(functools.partial(model.apply, image_logits=16))(variables,
                                                                  ids)
  assert part.shape == (2, 16, 16)
  np.testing.assert_allclose(part, full[:, 1:, :16], rtol=1e-6, atol=1e-6)

  def loss(v, **kw):
    out = model.apply(v, ids, **kw)
    return jnp.sum(jnp.sin(out if kw else out[:, 1:, :16]))
  g_full = jax.jit(jax.grad(loss))(variables)
  g_part = jax.jit(jax.grad(lambda v: loss(v, image_logits=16)))(variables)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               g_full, g_part)
  # The bias keeps the full vocabulary's shape (the release's tree).
  assert variables["params"]["MlmLayer_0"]["mlm_bias"]["bias"].shape == (20,)


def test_matches_release_logits(data_dir):
  ref = np.load(data_dir / "release_model_parity.npz")
  model = maskgit_transformer.Transformer(**release_params.TRANSFORMER)
  tokens = ref["tokens"]
  assert (tokens == -1).any()  # the file exercises the mask token
  variables = release_params.fill(
      release_params.shapes_of(model, tokens), seed=2000)
  logits = jax.jit(model.apply)(variables, tokens)
  np.testing.assert_allclose(np.asarray(logits), ref["logits"], rtol=1e-5,
                             atol=1e-5)


def test_dropout_is_active_only_in_training():
  model = maskgit_transformer.Transformer.from_preset(
      "tiny", hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
  ids = jnp.zeros((2, 17), jnp.int32)
  variables = nn.meta.unbox(model.init(jax.random.key(0), ids))
  eval1 = model.apply(variables, ids)
  eval2 = model.apply(variables, ids, deterministic=True)
  np.testing.assert_array_equal(eval1, eval2)
  train = model.apply(variables, ids, deterministic=False,
                      rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(train, eval1)


def test_bfloat16_mode_is_close_to_float32():
  model32 = maskgit_transformer.Transformer.from_preset(
      "small", num_hidden_layers=2)
  model16 = model32.clone(dtype=jnp.bfloat16)
  ids = np.random.RandomState(0).randint(0, 512, (2, 65)).astype(np.int32)
  variables = nn.meta.unbox(jax.jit(model32.init)(jax.random.key(0), ids))
  l32 = jax.jit(model32.apply)(variables, ids)
  l16 = jax.jit(model16.apply)(variables, ids)
  assert l16.dtype == jnp.float32  # logits come back in float32
  assert not np.array_equal(l16, l32)  # it really ran in lower precision
  p32, p16 = jax.nn.softmax(l32), jax.nn.softmax(l16)
  assert float(jnp.max(jnp.abs(p32 - p16))) < 0.02
  assert float(jnp.mean(jnp.argmax(l16, -1) == jnp.argmax(l32, -1))) > 0.9
  # Parameters stay float32 in both modes.
  v16 = nn.meta.unbox(jax.eval_shape(model16.init, jax.random.key(0), ids))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v16))


def test_parameters_carry_logical_axes():
  model = maskgit_transformer.Transformer.from_preset("tiny")
  boxed = jax.eval_shape(model.init, jax.random.key(0),
                         jnp.zeros((1, 17), jnp.int32))
  specs = nn.get_partition_spec(boxed)["params"]
  layer = specs["TransformerLayer_0"]
  assert tuple(layer["Mlp_0"]["intermediate_output"]["kernel"]) == (
      "embed", "mlp")
  assert tuple(layer["Attention_0"]["self_attention"]["query"]["kernel"]) == (
      "embed", "heads", "kv")
  assert tuple(specs["Embed_0"]["word_embeddings"]["embedding"]) == (
      "vocab", "embed")


def test_unknown_preset():
  with pytest.raises(ValueError, match="preset"):
    maskgit_transformer.Transformer.from_preset(384)


def _primitives(fn, *args):
  """The primitives of fn's jaxpr, nested ones (scan bodies) included."""
  found = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      found.add(str(eqn.primitive))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def test_low_precision_attention_loops_over_examples_only_at_inference():
  """The per-example loop (`lax.map`, a scan) is the CPU sampler's; a train
  step (deterministic=False, even without dropout, where Flax hands the
  attention deterministic=True) keeps the batched form, which the
  data-parallel step shards without while loops and all-gathers."""
  model = maskgit_transformer.Transformer.from_preset(
      "tiny", dtype=jnp.bfloat16, hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0)
  ids = np.random.RandomState(0).randint(0, 64, (3, 17)).astype(np.int32)
  variables = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids))

  def train(v):
    return model.apply(v, ids, deterministic=False,
                       rngs={"dropout": jax.random.key(1)})

  def infer(v):
    return model.apply(v, ids, deterministic=True)

  assert "scan" not in _primitives(train, variables)
  if jax.default_backend() == "cpu":
    assert "scan" in _primitives(infer, variables)
  np.testing.assert_allclose(np.asarray(jax.jit(train)(variables)),
                             np.asarray(jax.jit(infer)(variables)),
                             rtol=1e-5, atol=1e-5)
  # Odd and even batches (one example a loop step, or two), several heads:
  # the per-head matrix products give the batched form's values to the bit
  # at these sizes (longer products may round differently: 2e-7 of the scale
  # at the ImageNet-256 shapes on an AMX Xeon, benchmarks/attention_forms.py).
  for batch in (3, 4):
    q, k, v = (jax.random.normal(key, (batch, 5, 3, 4), jnp.bfloat16)
               for key in jax.random.split(jax.random.PRNGKey(batch), 3))
    looped = jax.jit(functools.partial(attention.low_precision_attention,
                                       loop_examples=True))(q, k, v)
    batched = jax.jit(attention.low_precision_attention)(q, k, v)
    assert looped.dtype == batched.dtype == jnp.float32
    assert looped.shape == batched.shape == (batch, 5, 3, 4)
    np.testing.assert_array_equal(np.asarray(looped), np.asarray(batched))


def test_cast_kernels_gives_the_same_bfloat16_logits():
  """Casting the kernels once (the sampler does it before its decode loop)
  gives the fast precision mode's logits bit for bit; float32 is left as
  it is; only `kernel` leaves change."""
  model = maskgit_transformer.Transformer.from_preset(
      "tiny", dtype=jnp.bfloat16)
  ids = np.random.RandomState(0).randint(0, 16, (2, 17)).astype(np.int32)
  variables = nn.meta.unbox(model.init(jax.random.key(0), ids))
  cast = maskgit_transformer.cast_kernels(variables, jnp.bfloat16)
  flat, flat_cast = (flax.traverse_util.flatten_dict(v["params"])
                     for v in (variables, cast))
  for path, leaf in flat_cast.items():
    want = jnp.bfloat16 if path[-1] == "kernel" else jnp.float32
    assert leaf.dtype == want, path
  assert sum(path[-1] == "kernel" for path in flat) >= 8
  np.testing.assert_array_equal(
      np.asarray(jax.jit(model.apply)(variables, ids)),
      np.asarray(jax.jit(model.apply)(cast, ids)))
  assert maskgit_transformer.cast_kernels(variables, jnp.float32) is variables


def _converts_of_shapes(fn, shapes, *args):
  """convert_element_type equations inside loop bodies of fn's jaxpr whose
  operand has one of `shapes`."""
  found = []

  def walk(jaxpr, in_loop):
    for eqn in jaxpr.eqns:
      if (in_loop and str(eqn.primitive) == "convert_element_type"
          and tuple(eqn.invars[0].aval.shape) in shapes):
        found.append(eqn)
      loop = in_loop or str(eqn.primitive) in ("while", "scan")
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub, loop)
  walk(jax.make_jaxpr(fn)(*args).jaxpr, False)
  return found


def test_bfloat16_sampler_casts_kernels_once_with_the_same_tokens():
  """The bfloat16 sampler's decode loop has no kernel casts left in it, and
  draws the tokens that casting in every forward draws."""
  from maskgit_jax.libml import parallel_decode  # pylint: disable=import-outside-toplevel
  from maskgit_jax.libml import sampling  # pylint: disable=import-outside-toplevel
  tok = vqgan_tokenizer.VQVAE.from_preset("tiny")
  tr = maskgit_transformer.Transformer.from_preset("tiny", dtype=jnp.bfloat16)
  tv = nn.meta.unbox(tok.init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
      method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x))))
  rv = nn.meta.unbox(tr.init(jax.random.key(1), jnp.zeros((1, 17), jnp.int32)))
  s = sampling.MaskGitSampler(tok, tv, tr, rv, num_classes=3)
  inputs = jnp.asarray(s.generation_inputs([0, 1, 2, None]))
  rng = jax.random.PRNGKey(3)
  kwargs = dict(num_iter=4, start_iter=0, choice_temperature=4.5,
                mask_scheduling_method="cosine", guidance_scale=0.0,
                guidance_schedule="constant", sampling_temperature=1.0,
                top_k=0, return_masks=False, position_scheduler="confidence",
                halton_random_shift=False)
  kernels = {tuple(x.shape) for p, x in flax.traverse_util.flatten_dict(
      rv["params"]).items() if p[-1] == "kernel"}

  def ours(v):
    return s._decode_tokens(v, inputs, rng, **kwargs)  # pylint: disable=protected-access

  def per_forward(v):  # every forward casts its kernels (before the fix)
    return parallel_decode.decode(
        inputs, rng, s._logits_fn(v), mask_token_id=sampling.MASK_TOKEN_ID,  # pylint: disable=protected-access
        null_inputs_fn=functools.partial(sampling._set_class_token,  # pylint: disable=protected-access
                                         class_id=s.null_class_id),
        grid_shape=(s.latent_size, s.latent_size), **kwargs)

  assert not _converts_of_shapes(ours, kernels, rv)
  assert _converts_of_shapes(per_forward, kernels, rv)  # the check can fail
  np.testing.assert_array_equal(np.asarray(ours(rv)),
                                np.asarray(jax.jit(per_forward)(rv)))


def _default_and_fused(**kw):
  """(default model, fused model, ids [3, 17], the default's variables) of
  a small transformer without dropout."""
  kw = dict(codebook_size=16, num_classes=3, latent_size=4, hidden_size=32,
            num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)
  default = maskgit_transformer.Transformer.create(**kw)
  fused = maskgit_transformer.Transformer.create(**kw, attention_impl="fused")
  ids = jax.random.randint(jax.random.key(1), (3, 17), -1, 19)
  variables = nn.meta.unbox(jax.jit(default.init)(jax.random.key(0), ids))
  return default, fused, ids, variables


def _training_gradients(model, variables, ids):
  def loss(v):
    out = model.apply(v, ids, False, image_logits=16,
                      rngs={"dropout": jax.random.key(2)})
    return jnp.mean(jax.nn.log_softmax(out)[..., 0])
  return jax.tree.leaves(jax.jit(jax.grad(loss))(variables))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fused_attention_equals_the_default(dtype):
  """attention_impl="fused" (jax.nn.dot_product_attention; XLA's on a CPU,
  cuDNN's on a GPU) has the same variables and, in training (no attention
  dropout) and at inference, the default's logits and gradients."""
  default, fused, ids, variables = _default_and_fused(dtype=dtype)
  fused_vars = nn.meta.unbox(jax.eval_shape(fused.init, jax.random.key(0),
                                            ids))
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, fused_vars)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  for deterministic in (True, False):
    a = jax.jit(default.apply, static_argnums=2)(variables, ids, deterministic)
    b = jax.jit(fused.apply, static_argnums=2)(variables, ids, deterministic)
    np.testing.assert_allclose(b, a, atol=tol, rtol=tol)
  for x, y in zip(_training_gradients(default, variables, ids),
                  _training_gradients(fused, variables, ids)):
    np.testing.assert_allclose(y, x, atol=tol, rtol=tol * 10)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_fused_attention_pads_once_for_an_even_length(monkeypatch,
                                                      scan_layers):
  """Where cuDNN's fused attention needs an even length (a GPU, bf16), the
  transformer pads the odd sequence (class token + latent**2) once, before
  its first layer, and every layer's attention sees the even length with
  the padded key masked: logits and gradients stay the default's. Forced on
  a CPU (XLA's implementation with the same sequence-length masks)."""
  default, fused, ids, variables = _default_and_fused(
      scan_layers=scan_layers)
  lengths = []
  real = attention.fused_attention

  def recording(query, key, value, **kwargs):
    lengths.append((query.shape[1], kwargs.get("valid_length")))
    return real(query, key, value, **kwargs)
  monkeypatch.setattr(attention, "fused_attention", recording)
  monkeypatch.setattr(attention, "fused_padding",
                      lambda length, dtype: length % 2)
  a = default.apply(variables, ids)
  b = fused.apply(variables, ids)
  assert b.shape == a.shape and a.shape[:2] == (3, 17)
  np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
  assert set(lengths) == {(18, 17)}  # every layer: even, 17 of them real
  for x, y in zip(_training_gradients(default, variables, ids),
                  _training_gradients(fused, variables, ids)):
    np.testing.assert_allclose(y, x, atol=1e-5, rtol=1e-4)
  monkeypatch.undo()  # a CPU never pads
  assert attention.fused_padding(17, jnp.bfloat16) == 0


def test_fused_attention_refuses_attention_dropout():
  model = maskgit_transformer.Transformer.create(
      codebook_size=16, num_classes=3, latent_size=4, hidden_size=16,
      num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.1,
      attention_impl="fused")
  ids = jnp.zeros((2, 17), jnp.int32)
  variables = model.init(jax.random.key(0), ids)  # inference: no dropout
  with pytest.raises(ValueError, match="no attention dropout"):
    model.apply(variables, ids, False, rngs={"dropout": jax.random.key(1)})
