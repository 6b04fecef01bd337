"""The `config.data` fields of the input pipeline, their defaults and checks.

Every field, with its default:

Source selection
  source ('fashion_mnist'): where the images come from.
      'fashion_mnist': the four standard idx files (gzipped or not) in `path`,
          or, when `path` is None, in /usr/share/datasets/fashion-mnist (the
          Debian package `dataset-fashion-mnist`).
      'folder': a folder of images; one sub-folder per class (labels are the
          indices of the sorted sub-folder names), or a flat folder of images
          (unconditional: every label is 0, `num_classes` is 1).
      'tfds': a TensorFlow Datasets data set read with `tfds.data_source`
          (array_record files; reading does not need TensorFlow).
  name (None): the TFDS name, e.g. 'imagenet2012' (source='tfds' only).
  path (None): 'folder': the image folder (required); 'fashion_mnist': the
      folder holding the idx files; 'tfds': the TFDS data_dir (None: the TFDS
      default, $TFDS_DATA_DIR or ~/tensorflow_datasets).
  eval_path (None): 'folder' only: the folder used for split='eval' (None:
      `path`, i.e. evaluation on the training images).
  train_split ('train'): the split read for split='train': a TFDS split name
      (slices such as 'train[:90%]' work), or 'train'/'test' for Fashion-MNIST.
      Ignored for 'folder'.
  eval_split (None): the split read for split='eval'; None means 'test' for
      Fashion-MNIST and 'validation' for TFDS.
  max_examples (None): read only the first `max_examples` records of the
      split (quick runs); None reads all.
  image_key ('image'), label_key ('label'): TFDS feature names; label_key None
      makes a TFDS data set unconditional (label 0).
  tfds_decode ('pil'): 'pil' reads the encoded image bytes from TFDS
      (`tfds.decode.SkipDecoding`) and decodes them here with PIL (JPEG
      draft-mode decoding, all image modes); 'tfds' lets TFDS decode to numpy.
  pad (True): Fashion-MNIST only: zero-pad the 28x28 images to 32x32 (a
      2-pixel black border) before the crop and resize to `image_size` (so
      image_size=32 keeps the pixels as they are); False: crop and resize the
      28x28 images directly.

Preprocessing (output: float32 in [0, 1], [batch, image_size, image_size,
channels], label int32 [batch])
  image_size (32): the side of the square output images.
  channels (3): 1 (grey, ITU-R 601-2 luma) or 3 (RGB; grey images are
      replicated). Transparent images are composited on white.
  random_crop (True): split='train': random resized crop (a window with an
      area fraction drawn from `crop_scale` and an aspect ratio drawn
      log-uniformly from `crop_ratio`, resized to image_size). False: the
      evaluation center crop is used for training too.
  crop_scale ((0.8, 1.0)): the area fraction range of the random crop. The
      Inception range (0.08, 1.0) suits large photographs, not 32x32 data.
  crop_ratio ((3/4, 4/3)): the aspect ratio (width / height) range.
  random_flip (True): split='train': horizontal flip with probability 1/2.
  eval_crop_fraction (1.0): evaluation (and training with random_crop=False):
      a centered square crop of side eval_crop_fraction * min(height, width),
      resized to image_size.
  resize_method ('bicubic'): 'bilinear', 'bicubic', 'lanczos', 'box' or
      'nearest' (PIL filters, antialiased when shrinking).

Order, epochs and speed
  seed (0): fixes the shuffling order of every epoch and the random crops and
      flips (a function of seed, epoch and record index only).
  shuffle (True): split='train': reshuffle every epoch (a new permutation of
      the process's shard per epoch). Evaluation is never shuffled.
  num_epochs (None): split='train': None repeats forever; an int stops after
      that many epochs.
  validate ('header'): 'folder' only, at index time: 'header' opens every file's
      header (fast: catches zero-byte, non-image and garbage files); 'full'
      decodes every file (also catches truncated files; slow for big folders);
      'none' checks nothing. Files that fail are skipped with one warning.
  read_threads (None): threads preparing batches in each process; 0 prepares
      them in the calling thread, when `next()` is called. None picks: 0 for
      Fashion-MNIST (in memory: threads only contend for the GIL), else
      min(16, 2 x CPUs) (PIL releases the GIL while decoding and resizing).
  prefetch_batches (2): batches prepared ahead, per process.
  worker_count (0): grain worker processes per JAX process (0: none; try 1-2x
      the spare cores when decoding large JPEGs is the bottleneck).
"""
from collections.abc import Mapping
import os
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

SOURCES = ('fashion_mnist', 'folder', 'tfds')
RESIZE_METHODS = ('nearest', 'bilinear', 'bicubic', 'lanczos', 'box')
VALIDATE_MODES = ('none', 'header', 'full')


def get_config() -> ml_collections.ConfigDict:
  """Returns the default `config.data` (see the module docstring).

  The fields that default to None are typed placeholders, so that the
  command line can set them (`--config.data.path=/data`): ml_collections
  refuses to override a plain None.
  """
  return ml_collections.ConfigDict({
      'source': 'fashion_mnist',
      'name': placeholder(str),
      'path': placeholder(str),
      'eval_path': placeholder(str),
      'train_split': 'train',
      'eval_split': placeholder(str),
      'max_examples': placeholder(int),
      'image_key': 'image',
      'label_key': 'label',
      'tfds_decode': 'pil',
      'pad': True,
      'image_size': 32,
      'channels': 3,
      'random_crop': True,
      'crop_scale': (0.8, 1.0),
      'crop_ratio': (3.0 / 4.0, 4.0 / 3.0),
      'random_flip': True,
      'eval_crop_fraction': 1.0,
      'resize_method': 'bicubic',
      'seed': 0,
      'shuffle': True,
      'num_epochs': placeholder(int),
      'validate': 'header',
      'read_threads': placeholder(int),
      'prefetch_batches': 2,
      'worker_count': 0,
  })


def _as_dict(config: Any) -> dict[str, Any]:
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()
  if isinstance(config, Mapping):
    return dict(config)
  raise TypeError(
      f'config.data must be a ConfigDict or a mapping, got {type(config)}.')


def resolve(config: Any) -> ml_collections.FrozenConfigDict:
  """Fills in defaults and checks every field.

  Args:
    config: `config.data`, a ConfigDict or mapping holding any subset of the
      fields of `get_config()`.

  Returns:
    A frozen config with every field.

  Raises:
    ValueError: an unknown field or a bad value, naming both.
  """
  given = _as_dict(config)
  full = get_config().to_dict()
  unknown = sorted(set(given) - set(full))
  if unknown:
    raise ValueError(
        f'Unknown config.data field(s) {unknown}; known fields: '
        f'{sorted(full)}.')
  full.update(given)
  c = full
  if c['source'] not in SOURCES:
    raise ValueError(
        f'Unknown config.data.source {c["source"]!r}; expected one of '
        f'{list(SOURCES)}.')
  if c['source'] == 'tfds' and not c['name']:
    raise ValueError("config.data.name must name the TFDS data set when "
                     "config.data.source='tfds' (e.g. 'imagenet2012').")
  if c['source'] == 'folder' and not c['path']:
    raise ValueError("config.data.path must be the image folder when "
                     "config.data.source='folder'.")
  if not isinstance(c['image_size'], int) or c['image_size'] < 1:
    raise ValueError(
        f'config.data.image_size must be a positive int, got '
        f'{c["image_size"]!r}.')
  if c['channels'] not in (1, 3):
    raise ValueError(
        f'config.data.channels must be 1 or 3, got {c["channels"]!r}.')
  lo, hi = _pair(c, 'crop_scale')
  if not 0.0 < lo <= hi <= 1.0:
    raise ValueError(
        f'config.data.crop_scale must satisfy 0 < low <= high <= 1, got '
        f'{c["crop_scale"]!r}.')
  lo, hi = _pair(c, 'crop_ratio')
  if not 0.0 < lo <= hi:
    raise ValueError(
        f'config.data.crop_ratio must satisfy 0 < low <= high, got '
        f'{c["crop_ratio"]!r}.')
  if not 0.0 < c['eval_crop_fraction'] <= 1.0:
    raise ValueError(
        f'config.data.eval_crop_fraction must be in (0, 1], got '
        f'{c["eval_crop_fraction"]!r}.')
  if c['resize_method'] not in RESIZE_METHODS:
    raise ValueError(
        f'config.data.resize_method {c["resize_method"]!r} is not one of '
        f'{list(RESIZE_METHODS)}.')
  if c['validate'] not in VALIDATE_MODES:
    raise ValueError(
        f'config.data.validate {c["validate"]!r} is not one of '
        f'{list(VALIDATE_MODES)}.')
  if c['tfds_decode'] not in ('pil', 'tfds'):
    raise ValueError(
        f"config.data.tfds_decode must be 'pil' or 'tfds', got "
        f'{c["tfds_decode"]!r}.')
  if c['read_threads'] is not None and (
      not isinstance(c['read_threads'], int) or c['read_threads'] < 0):
    raise ValueError(
        f'config.data.read_threads must be None or an int >= 0, got '
        f'{c["read_threads"]!r}.')
  for key in ('worker_count',):
    if not isinstance(c[key], int) or c[key] < 0:
      raise ValueError(
          f'config.data.{key} must be an int >= 0, got {c[key]!r}.')
  if not isinstance(c['prefetch_batches'], int) or c['prefetch_batches'] < 1:
    raise ValueError(
        f'config.data.prefetch_batches must be an int >= 1, got '
        f'{c["prefetch_batches"]!r}.')
  for key in ('num_epochs', 'max_examples'):
    if c[key] is not None and (not isinstance(c[key], int) or c[key] < 1):
      raise ValueError(
          f'config.data.{key} must be None or an int >= 1, got {c[key]!r}.')
  if not isinstance(c['seed'], int) or c['seed'] < 0:
    raise ValueError(
        f'config.data.seed must be an int >= 0, got {c["seed"]!r}.')
  c['crop_scale'] = tuple(float(v) for v in c['crop_scale'])
  c['crop_ratio'] = tuple(float(v) for v in c['crop_ratio'])
  return ml_collections.FrozenConfigDict(c)


def read_threads(config: ml_collections.FrozenConfigDict) -> int:
  """`config.read_threads`, or the automatic choice when it is None."""
  if config.read_threads is not None:
    return config.read_threads
  if config.source == 'fashion_mnist':
    return 0
  return min(16, 2 * (os.cpu_count() or 1))


def _pair(c: dict[str, Any], key: str) -> tuple[float, float]:
  value = c[key]
  try:
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(
        f'config.data.{key} must be a pair of numbers, got {value!r}.'
    ) from None
  return lo, hi


def for_model(config: ml_collections.ConfigDict,
              channels: int) -> ml_collections.ConfigDict:
  """A run's `config.data` with the image size and channels of its models
  (`config.image_size`, the tokenizer's channels) and its seed; what
  training and evaluation both read."""
  d = ml_collections.ConfigDict(config.data.to_dict())
  d.image_size = config.image_size
  d.channels = channels
  d.seed = config.seed if d.get("seed") is None else d.seed
  return d
