"""Tests of the idx reader and the Fashion-MNIST source."""
import gzip
import os

import numpy as np
import pytest

from maskgit_jax.data import fashion_mnist
from maskgit_jax.data import idx


@pytest.mark.parametrize('compress', [False, True])
@pytest.mark.parametrize('dtype', ['uint8', 'int8', 'int16', 'int32',
                                   'float32', 'float64'])
def test_roundtrip(tmp_path, compress, dtype):
  rng = np.random.default_rng(0)
  array = (rng.normal(size=(3, 5, 4)) * 100).astype(dtype)
  path = tmp_path / ('x.idx.gz' if compress else 'x.idx')
  idx.write(path, array)
  raw = path.read_bytes()
  assert (raw[:2] == b'\x1f\x8b') == compress
  got = idx.read(path)
  assert got.shape == (3, 5, 4)
  assert got.dtype == np.dtype(dtype)  # Native byte order.
  np.testing.assert_array_equal(got, array)


def test_known_bytes():
  # Big-endian header: type 0x08 (ubyte), rank 2, dims (2, 3).
  data = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 255])
  np.testing.assert_array_equal(idx.decode(data),
                                [[1, 2, 3], [4, 5, 255]])
  # Type 0x0B (int16, big-endian): 0x0102 = 258.
  data = bytes([0, 0, 0x0B, 1, 0, 0, 0, 1, 1, 2])
  assert idx.decode(data).tolist() == [258]


def test_gzip_detected_by_content_not_name(tmp_path):
  path = tmp_path / 'plain-name-but-gzipped'
  path.write_bytes(gzip.compress(idx.encode(np.arange(4, dtype=np.uint8))))
  assert idx.read(path).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize('data,message', [
    (b'\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02', 'truncated'),
    (b'\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02', 'corrupt'),
    (b'\x01\x00\x08\x01', 'bad magic'),
    (b'\x00\x00\x07\x01\x00\x00\x00\x01\x01', 'unknown idx data type'),
    (b'\x00\x00\x08\x03\x00\x00', 'truncated idx header'),
])
def test_bad_files(data, message):
  with pytest.raises(ValueError, match=message):
    idx.decode(data, 'f')


def test_corrupt_gzip(tmp_path):
  path = tmp_path / 'x.gz'
  path.write_bytes(gzip.compress(idx.encode(np.zeros(100, np.uint8)))[:-10])
  with pytest.raises(ValueError, match='corrupt gzip'):
    idx.read(path)


def write_fashion_mnist(folder, num_train=30, num_test=12, compress=True):
  """Writes fake Fashion-MNIST files; image i has pixel [0, 0] = i % 256."""
  os.makedirs(folder, exist_ok=True)
  suffix = '.gz' if compress else ''
  for prefix, n in (('train', num_train), ('t10k', num_test)):
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    images[:, 10:18, 10:18] = 200
    labels = (np.arange(n) % 10).astype(np.uint8)
    idx.write(os.path.join(folder, f'{prefix}-images-idx3-ubyte{suffix}'),
              images)
    idx.write(os.path.join(folder, f'{prefix}-labels-idx1-ubyte{suffix}'),
              labels)


@pytest.mark.parametrize('compress', [False, True])
def test_fashion_mnist_source(tmp_path, compress):
  write_fashion_mnist(tmp_path, compress=compress)
  source = fashion_mnist.FashionMnistSource('test', path=str(tmp_path))
  assert len(source) == 12
  image, label = source[7]
  assert image.shape == (28, 28) and image.dtype == np.uint8
  assert image[0, 0] == 7 and label == 7
  assert source.num_classes == 10
  assert source.class_names[0] == 'T-shirt/top'
  assert source.class_names[9] == 'Ankle boot'
  padded = fashion_mnist.FashionMnistSource('train', path=str(tmp_path),
                                            pad_to=32)
  image, label = padded[13]
  assert image.shape == (32, 32) and label == 3
  assert image[2, 2] == 13  # Two rows and columns of zeros on each side.
  assert image[:2].sum() == 0 and image[:, :2].sum() == 0
  assert image[30:].sum() == 0 and image[:, 30:].sum() == 0


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match='apt-get install dataset-fashion-mnist'):
    fashion_mnist.FashionMnistSource('train', path=str(tmp_path))
  with pytest.raises(ValueError, match="'validation'"):
    fashion_mnist.find_files('validation', str(tmp_path))


def test_fashion_mnist_bad_label(tmp_path):
  write_fashion_mnist(tmp_path)
  idx.write(tmp_path / 't10k-labels-idx1-ubyte.gz',
            np.full(12, 10, np.uint8))
  with pytest.raises(ValueError, match='not a Fashion-MNIST class'):
    fashion_mnist.FashionMnistSource('test', path=str(tmp_path))


@pytest.mark.skipif(
    not os.path.exists(os.path.join(fashion_mnist.DEFAULT_DIR,
                                    't10k-images-idx3-ubyte.gz')),
    reason='dataset-fashion-mnist is not installed')
def test_installed_fashion_mnist():
  source = fashion_mnist.FashionMnistSource('test')
  assert len(source) == 10000
  labels = np.array([source[i][1] for i in range(0, 10000, 7)])
  assert set(labels.tolist()) == set(range(10))
