"""Fashion-MNIST (Xiao et al. 2017) from its four standard idx files.

The files (each gzipped or not):
  train-images-idx3-ubyte[.gz]  uint8 [60000, 28, 28]
  train-labels-idx1-ubyte[.gz]  uint8 [60000]
  t10k-images-idx3-ubyte[.gz]   uint8 [10000, 28, 28]
  t10k-labels-idx1-ubyte[.gz]   uint8 [10000]
are looked up in `path`, or when `path` is None in DEFAULT_DIR, where the
Debian package `dataset-fashion-mnist` installs them.
"""
import functools
import os

import numpy as np

from maskgit_jax.data import idx

DEFAULT_DIR = '/usr/share/datasets/fashion-mnist'
SIZE = 28
PADDED_SIZE = 32  # The usual 2-pixel border of (Fashion-)MNIST at 32x32.
CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
               'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
_PREFIX = {'train': 'train', 'test': 't10k'}
HOW_TO_GET = (
    'Install them with `sudo apt-get install dataset-fashion-mnist` (into '
    f'{DEFAULT_DIR}) or set config.data.path to a folder holding '
    'train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, '
    't10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (from '
    'https://github.com/zalandoresearch/fashion-mnist).')


def find_file(folder: str, stem: str) -> str | None:
  """Returns folder/stem.gz or folder/stem, whichever exists, else None."""
  for name in (stem + '.gz', stem):
    candidate = os.path.join(folder, name)
    if os.path.isfile(candidate):
      return candidate
  return None


def find_files(split: str, path: str | None = None) -> tuple[str, str]:
  """Returns the (images, labels) idx paths of `split` ('train' or 'test').

  Raises:
    ValueError: unknown split.
    FileNotFoundError: no copy found; the message says how to get one.
  """
  if split not in _PREFIX:
    raise ValueError(
        f"Fashion-MNIST split must be 'train' or 'test', got {split!r}.")
  folder = os.path.expanduser(path) if path else DEFAULT_DIR
  prefix = _PREFIX[split]
  images = find_file(folder, f'{prefix}-images-idx3-ubyte')
  labels = find_file(folder, f'{prefix}-labels-idx1-ubyte')
  if images is None or labels is None:
    where = ('config.data.path' if path else 'the default folder')
    raise FileNotFoundError(
        f'Fashion-MNIST {split} files {prefix}-images-idx3-ubyte[.gz] and '
        f'{prefix}-labels-idx1-ubyte[.gz] not found in {folder} ({where}). '
        + HOW_TO_GET)
  return images, labels


@functools.lru_cache(maxsize=4)
def _load_cached(images_path: str, labels_path: str,
                 stamp: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  del stamp  # Only part of the cache key: reload when the files change.
  images = idx.read(images_path)
  labels = idx.read(labels_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(
        f'{images_path}: expected uint8 images [N, H, W], got '
        f'{images.dtype} {images.shape}.')
  if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
    raise ValueError(
        f'{labels_path}: expected {images.shape[0]} labels, got shape '
        f'{labels.shape}.')
  if labels.size and labels.max() >= len(CLASS_NAMES):
    raise ValueError(
        f'{labels_path}: label {int(labels.max())} is not a Fashion-MNIST '
        f'class (0..{len(CLASS_NAMES) - 1}).')
  images.setflags(write=False)
  labels = labels.astype(np.int32)
  labels.setflags(write=False)
  return images, labels


def load(split: str, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Loads a split: (uint8 images [N, 28, 28], int32 labels [N]).

  Cached in memory per process (keyed by path, size and mtime).
  """
  images_path, labels_path = find_files(split, path)
  stamp = tuple(
      v for p in (images_path, labels_path)
      for v in (os.stat(p).st_size, os.stat(p).st_mtime_ns))
  return _load_cached(images_path, labels_path, stamp)


class FashionMnistSource:
  """Fashion-MNIST records: (uint8 [S, S] image, label).

  S is 28, or `pad_to` when set: the images are then zero-padded (black
  border) symmetrically to pad_to x pad_to.
  """

  num_classes = len(CLASS_NAMES)
  class_names = CLASS_NAMES
  conditional = True

  def __init__(self, split: str, path: str | None = None,
               pad_to: int | None = None):
    if pad_to is not None and pad_to < SIZE:
      raise ValueError(f'pad_to must be >= {SIZE}, got {pad_to}.')
    self._split = split
    self._path = path
    self._pad_to = pad_to
    self._images, self._labels = load(split, path)

  def __len__(self) -> int:
    return self._labels.shape[0]

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    image = self._images[index]
    if self._pad_to is not None and self._pad_to != image.shape[0]:
      before = (self._pad_to - image.shape[0]) // 2
      padded = np.zeros((self._pad_to, self._pad_to), np.uint8)
      padded[before:before + image.shape[0], before:before + image.shape[1]] = (
          image)
      image = padded
    return image, int(self._labels[index])

  def describe(self, index: int) -> str:
    return f'fashion_mnist[{self._split}] #{index}'

  # Worker processes reload the arrays from the files instead of receiving
  # them pickled.
  def __getstate__(self):
    return {'split': self._split, 'path': self._path, 'pad_to': self._pad_to}

  def __setstate__(self, state):
    self.__init__(state['split'], state['path'], state['pad_to'])
