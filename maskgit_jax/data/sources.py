"""Random-access sources of (encoded or decoded image, label) records.

A source is a sequence: `len(source)` records, `source[i]` -> `(image,
label)` where `image` is one of
  * a file path (str), decoded lazily with PIL,
  * encoded image bytes (JPEG, PNG, ...),
  * a decoded uint8/uint16 numpy array [H, W] or [H, W, C],
and `label` is an int in [0, num_classes). Every source also has
`num_classes`, `class_names` (a tuple of `num_classes` strings), `conditional`
(False for unlabelled data, whose labels are all 0) and `describe(i)`, a name
of record i for messages (its path, or 'name[split] #i').

`make_source` picks the source from `config.data.source`.
"""
from typing import Protocol

import ml_collections
import numpy as np

Image = str | bytes | np.ndarray


class Source(Protocol):
  """The interface every source implements (see the module docstring)."""

  num_classes: int
  class_names: tuple[str, ...]
  conditional: bool

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> tuple[Image, int]:
    ...

  def describe(self, index: int) -> str:
    ...


def check_splits(config: ml_collections.ConfigDict) -> None:
  """One ValueError naming `config.data.train_split` / `eval_split` when the
  source has no such split (Fashion-MNIST: 'train' and 'test'; the other
  sources' names are checked when they are read)."""
  if config.source != 'fashion_mnist':
    return
  for key in ('train_split', 'eval_split'):
    name = config.get(key)
    if name is not None and name not in ('train', 'test'):
      raise ValueError(f"config.data.{key}={name!r}: Fashion-MNIST has the "
                       "splits 'train' and 'test'.")


def make_source(config: ml_collections.FrozenConfigDict, split: str, *,
                cache_dir: str | None = None) -> Source:
  """Builds the source of `config.source` for `split`.

  Args:
    config: a resolved `config.data` (see `maskgit_jax.data.config.resolve`).
    split: 'train' or 'eval'.
    cache_dir: folder for the image-folder index cache (the run's workdir);
      None: no cache.

  Returns:
    The source, limited to `config.max_examples` records when set.

  Raises:
    ValueError: unknown source or split, or unusable data (the message names
      the value or path).
    FileNotFoundError: a missing path or data set (the message says how to
      get it).
  """
  if split not in ('train', 'eval'):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}.")
  if config.source == 'fashion_mnist':
    # pylint: disable=g-import-not-at-top
    from maskgit_jax.data import fashion_mnist
    check_splits(config)
    name = config.train_split if split == 'train' else (
        config.eval_split or 'test')
    source = fashion_mnist.FashionMnistSource(
        name, path=config.path,
        pad_to=fashion_mnist.PADDED_SIZE if config.pad else None)
  elif config.source == 'folder':
    from maskgit_jax.data import image_folder
    path = config.path if split == 'train' else (
        config.eval_path or config.path)
    source = image_folder.ImageFolderSource(
        path, cache_dir=cache_dir, validate=config.validate)
  elif config.source == 'tfds':
    from maskgit_jax.data import tfds_source
    name = config.train_split if split == 'train' else (
        config.eval_split or 'validation')
    source = tfds_source.TfdsSource(
        config.name, name, data_dir=config.path, image_key=config.image_key,
        label_key=config.label_key, decode_with_pil=config.tfds_decode == 'pil')
  else:
    raise ValueError(
        f'Unknown config.data.source {config.source!r}; expected one of '
        "['fashion_mnist', 'folder', 'tfds'].")
  if config.max_examples is not None and config.max_examples < len(source):
    source = Limited(source, config.max_examples)
  if len(source) == 0:  # pylint: disable=g-explicit-length-test
    raise ValueError(f'The {split} data ({config.source}) has no records.')
  return source


class Limited:
  """The first `count` records of a source."""

  def __init__(self, source: Source, count: int):
    self._source = source
    self._count = count
    self.num_classes = source.num_classes
    self.class_names = source.class_names
    self.conditional = source.conditional

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, index: int) -> tuple[Image, int]:
    if not 0 <= index < self._count:
      raise IndexError(index)
    return self._source[index]

  def describe(self, index: int) -> str:
    return self._source.describe(index)
