"""The fast precision mode's backward: bfloat16 gradient products
(`attention._low_precision_backward_dot`); on a CPU only for unbatched
products, with a float32 result. The accelerator's form is traced and run
here by XLA:CPU with `jax.default_backend` patched, at sizes XLA:CPU runs
correctly."""
import collections

import flax.linen as nn
import jax
import jax.extend.core  # pylint: disable=unused-import
import jax.numpy as jnp
import numpy as np
import pytest


@pytest.fixture
def accelerator(monkeypatch):
  """The transformer's products as on a GPU or TPU."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")

from maskgit_jax.nets import attention
from maskgit_jax.nets import maskgit_transformer

DENSE = (((1,), (0,)), ((), ()))


def _dot_dtypes(fn, *args, batched=None):
  """Counter of (lhs dtype, rhs dtype, out dtype) over fn's dot_generals,
  nested jaxprs included; `batched` True / False: only the products with /
  without batch dimensions."""
  found = collections.Counter()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if str(eqn.primitive) == "dot_general" and (
          batched is None or
          batched == bool(eqn.params["dimension_numbers"][1][0])):
        found[tuple(str(v.aval.dtype) for v in eqn.invars) +
              (str(eqn.outvars[0].aval.dtype),)] += 1
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def test_forward_is_the_float32_accumulating_product():
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.randn(8, 300), jnp.bfloat16)
  w = jnp.asarray(rs.randn(300, 5), jnp.bfloat16)
  out = attention.dot_general(jnp.bfloat16)(x, w, DENSE)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(out, jax.lax.dot_general(
      x, w, DENSE, preferred_element_type=jnp.float32))


def test_gradients_are_products_of_the_rounded_cotangent(accelerator):  # pylint: disable=redefined-outer-name,unused-argument
  """d/dx sum(c * (x.w)) = round_bf16(c) . w^T, to bf16 rounding of a
  float32 accumulation; the float32 mode keeps the exact gradient."""
  rs = np.random.RandomState(1)
  x = jnp.asarray(rs.randn(6, 40), jnp.bfloat16)
  w = jnp.asarray(rs.randn(40, 7), jnp.bfloat16)
  c = jnp.asarray(rs.randn(6, 7), jnp.float32)
  f = attention.dot_general(jnp.bfloat16)
  gx, gw = jax.grad(lambda a, b: jnp.sum(c * f(a, b, DENSE)),
                    argnums=(0, 1))(x, w)
  assert gx.dtype == gw.dtype == jnp.bfloat16
  c16 = np.asarray(c.astype(jnp.bfloat16), np.float64)
  want_x = c16 @ np.asarray(w, np.float64).T
  want_w = np.asarray(x, np.float64).T @ c16
  # One rounding to bfloat16 (relative 2^-8) of the exact product.
  np.testing.assert_allclose(np.asarray(gx, np.float64), want_x,
                             rtol=2**-8, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gw, np.float64), want_w,
                             rtol=2**-8, atol=1e-6)
  # With the unrounded cotangent the answer differs: the rounding happened.
  exact_x = np.asarray(c, np.float64) @ np.asarray(w, np.float64).T
  assert not np.allclose(want_x, exact_x, rtol=1e-7, atol=0)


def _model(dtype, **kw):
  return maskgit_transformer.Transformer.create(
      codebook_size=16, num_classes=3, latent_size=4, hidden_size=32,
      num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      dtype=dtype, **kw)


def _loss(model, ids):
  def loss(v):
    out = model.apply(v, ids, False, rngs={"dropout": jax.random.key(2)})
    return jnp.mean(jax.nn.log_softmax(out)[..., 0])
  return loss


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_train_step_has_no_mixed_products(dtype, accelerator):  # pylint: disable=redefined-outer-name,unused-argument
  """On an accelerator, in the bfloat16 mode every product of the gradient,
  the attention's and the tied output layer's included, takes two bfloat16
  inputs (XLA would compute a float32 x bfloat16 product in float32); in
  float32 all are float32."""
  ids = jax.random.randint(jax.random.key(1), (3, 17), 0, 19)
  model = _model(dtype)
  variables = nn.meta.unbox(model.init(jax.random.key(0), ids))
  found = _dot_dtypes(jax.grad(_loss(model, ids)), variables)
  name = jnp.dtype(dtype).name
  assert found and all(k[0] == k[1] == name for k in found), found
  if dtype == jnp.float32:
    assert set(found) == {("float32",) * 3}


def test_cpu_keeps_the_automatic_backward_of_batched_products():
  """On a CPU the bfloat16 mode's dense layers and output layer multiply in
  bfloat16 with a float32 result; the attention's batched products keep
  the automatic backward (float32 cotangent x bfloat16 operand; see
  `attention._low_precision_backward_dot`)."""
  ids = jax.random.randint(jax.random.key(1), (3, 17), 0, 19)
  model = _model(jnp.bfloat16)
  variables = nn.meta.unbox(model.init(jax.random.key(0), ids))
  grad = jax.grad(_loss(model, ids))
  assert set(_dot_dtypes(grad, variables, batched=False)) == {
      ("bfloat16", "bfloat16", "float32")}
  assert ("float32", "bfloat16", "float32") in _dot_dtypes(
      grad, variables, batched=True)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_bfloat16_gradients_stay_close_to_float32(backend, monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  ids = jax.random.randint(jax.random.key(1), (4, 17), 0, 19)
  m32, m16 = _model(jnp.float32), _model(jnp.bfloat16)
  variables = nn.meta.unbox(jax.jit(m32.init)(jax.random.key(0), ids))
  # Jitted: op by op, each operation would compile as a program of its own.
  g32 = jax.jit(jax.grad(_loss(m32, ids)))(variables)
  g16 = jax.jit(jax.grad(_loss(m16, ids)))(variables)
  for a, b in zip(jax.tree.leaves(g32), jax.tree.leaves(g16)):
    assert b.dtype == jnp.float32  # parameters (and their gradients) f32
    # (The key bias's gradient is zero up to rounding: the softmax does not
    # see it; the floor keeps its rounding noise from counting.)
    scale = max(float(jnp.max(jnp.abs(a))), 1e-4)
    # On an accelerator the dense layers' results are rounded to bfloat16
    # as well (2.6% at most here, 1.4% on the CPU's float32 results).
    tol = 0.02 if backend == "cpu" else 0.04
    assert float(jnp.max(jnp.abs(a - b))) / scale < tol


def test_accelerator_dense_products_return_bfloat16(accelerator):  # pylint: disable=redefined-outer-name,unused-argument
  """On an accelerator the bf16 mode's dense layers return bfloat16 from
  their float32 accumulation (no float32 activations converted back by the
  next layer); the attention's products and the output logits stay float32.
  A CPU returns float32 from all (test_cpu_keeps_...)."""
  ids = jax.random.randint(jax.random.key(1), (3, 17), 0, 19)
  model = _model(jnp.bfloat16)
  variables = nn.meta.unbox(model.init(jax.random.key(0), ids))
  forward = lambda v: model.apply(v, ids)  # pylint: disable=unnecessary-lambda-assignment
  # 2 layers x (q, k, v, out, 2 MLP) + the output layer's dense.
  assert _dot_dtypes(forward, variables, batched=False) == {
      ("bfloat16", "bfloat16", "bfloat16"): 13,
      ("bfloat16", "bfloat16", "float32"): 1}  # the tied logits
  assert set(_dot_dtypes(forward, variables, batched=True)) == {
      ("bfloat16", "bfloat16", "float32")}  # the attention's two products
  assert forward(variables).dtype == jnp.float32
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.randn(8, 300), jnp.bfloat16)
  w = jnp.asarray(rs.randn(300, 5), jnp.bfloat16)
  out = attention.dot_general(jnp.bfloat16)(x, w, DENSE)
  exact = jax.lax.dot_general(x, w, DENSE, preferred_element_type=jnp.float32)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), exact,
                             rtol=2**-8, atol=1e-3)
  logits = attention.dot_general(jnp.bfloat16, float32_result=True)(
      x, w, DENSE)
  assert logits.dtype == jnp.float32


LAYOUTS = [
    ((6, 40), (40, 7), DENSE),                                # Dense
    ((2, 5, 12), (12, 3, 4), (((2,), (0,)), ((), ()))),        # qkv
    ((2, 5, 3, 4), (3, 4, 12), (((2, 3), (0, 1)), ((), ()))),  # out
    ((2, 5, 12), (9, 12), (((2,), (1,)), ((), ()))),           # tied head
    ((2, 5, 3, 4), (2, 6, 3, 4), (((3,), (3,)), ((0, 2), (0, 2)))),  # logits
    ((2, 3, 5, 6), (2, 6, 3, 4), (((3,), (1,)), ((0, 1), (0, 2)))),  # values
    ((4, 3, 5), (5, 7, 4), (((0, 2), (2, 0)), ((), ()))),      # unordered
]


@pytest.mark.parametrize("lhs_shape,rhs_shape,dims", LAYOUTS)
@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_gradients_of_every_layout_match_jax(lhs_shape, rhs_shape, dims,
                                             backend, monkeypatch):
  """The backward against jax's own gradient of the same product, computed
  in float32 from the bfloat16-rounded cotangent: an accelerator's form
  (a bfloat16 result) and a CPU's (a float32 one, rounded after; batched
  products: the automatic backward)."""
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  rs = np.random.RandomState(2)
  x = jnp.asarray(rs.randn(*lhs_shape), jnp.bfloat16)
  w = jnp.asarray(rs.randn(*rhs_shape), jnp.bfloat16)
  f = attention.dot_general(jnp.bfloat16)
  out_shape = jax.eval_shape(lambda a, b: f(a, b, dims), x, w).shape
  c = jnp.asarray(rs.randn(*out_shape), jnp.float32)
  grad = jax.grad(lambda a, b: jnp.sum(c * f(a, b, dims)), argnums=(0, 1))
  got = grad(x, w)
  found = _dot_dtypes(grad, x, w)
  if backend == "cpu" and dims[1][0]:  # batched on a CPU: automatic
    assert ("float32", "bfloat16", "float32") in found
    return
  # Gradient products in bfloat16, with a bfloat16 result on an
  # accelerator (there the forward's too, but for batched products).
  assert all(k[:2] == ("bfloat16", "bfloat16") for k in found), found
  assert {k[2] for k in found} == (
      {"float32"} if backend == "cpu" else
      {"float32", "bfloat16"} if dims[1][0] else {"bfloat16"})
  c16 = c.astype(jnp.bfloat16).astype(jnp.float32)
  want = jax.grad(lambda a, b: jnp.sum(c16 * jax.lax.dot_general(
      a, b, dims, precision="highest")), argnums=(0, 1))(
          x.astype(jnp.float32), w.astype(jnp.float32))
  for g, h, operand in zip(got, want, (x, w)):
    assert g.shape == operand.shape and g.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(g, np.float32), h, rtol=2**-7,
                               atol=1e-5)


def test_even_length_attention_is_the_same_attention():
  """The odd-length sequence padded for cuDNN (run here by XLA): the same
  output and gradients as the unpadded attention."""
  rs = np.random.RandomState(3)
  q, k, v = (jnp.asarray(rs.randn(2, 17, 4, 8), jnp.float32) for _ in "qkv")
  w = jnp.asarray(rs.randn(2, 17, 4, 8), jnp.float32)

  def loss(fn, *qkv):
    out = fn(*qkv)
    return jnp.sum(w * out), out
  plain = lambda *t: jax.nn.dot_product_attention(*t, implementation="xla")
  padded = lambda *t: attention.even_length_attention(*t, "xla")
  (_, a), ga = jax.value_and_grad(lambda *t: loss(plain, *t), (0, 1, 2),
                                  has_aux=True)(q, k, v)
  (_, b), gb = jax.value_and_grad(lambda *t: loss(padded, *t), (0, 1, 2),
                                  has_aux=True)(q, k, v)
  assert b.shape == a.shape
  np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  for x, y in zip(ga, gb):
    np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)
