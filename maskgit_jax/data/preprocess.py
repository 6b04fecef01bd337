"""Decoding, cropping, resizing and flipping of one image, with PIL and numpy.

`Preprocessor(...)(image, rng)` maps an image (file path, encoded bytes or a
decoded array) to float32 [size, size, channels] in [0, 1]:

  training (rng given):   random resized crop (or the center crop when
                          random_crop is False), resize, random flip;
  evaluation (rng None):  center square crop, resize.

Image modes: RGB, RGBA/LA/PA and palette or grey images with a transparent
colour (composited on white), L, 1, P, CMYK, YCbCr, 16-bit grey (I;16*, I:
scaled by 1/65535) and F (taken as already in [0, 1]). Grey images become
three equal channels when channels=3; colour images become ITU-R 601-2 luma
when channels=1. EXIF orientation is applied. Large JPEGs are decoded at a
reduced scale (PIL draft mode) when the crop would be shrunk at least 2x.
"""
import contextlib
import io
import math
from typing import Iterator

import numpy as np
from PIL import Image
from PIL import ImageOps

from maskgit_jax.data import sources

RESAMPLE = {
    'nearest': Image.Resampling.NEAREST,
    'bilinear': Image.Resampling.BILINEAR,
    'bicubic': Image.Resampling.BICUBIC,
    'lanczos': Image.Resampling.LANCZOS,
    'box': Image.Resampling.BOX,
}
_ORIENTATION_TAG = 0x0112
_TRANSPARENT_MODES = ('RGBA', 'LA', 'PA', 'RGBa', 'La')
_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')

Box = tuple[float, float, float, float]  # (left, top, right, bottom)


def random_resized_crop_box(rng: np.random.Generator, width: int, height: int,
                            scale: tuple[float, float],
                            ratio: tuple[float, float]) -> Box:
  """Samples a crop window (the torchvision RandomResizedCrop rule).

  Up to 10 tries of an area fraction uniform in `scale` and an aspect ratio
  (width / height) log-uniform in `ratio`; a window that fits is placed
  uniformly. Otherwise the largest centered window with a ratio clamped into
  `ratio`.

  Returns:
    (left, top, right, bottom) integer pixel bounds within the image.
  """
  area = width * height
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      left = int(rng.integers(0, width - w + 1))
      top = int(rng.integers(0, height - h + 1))
      return (left, top, left + w, top + h)
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, max(1, int(round(width / ratio[0])))
  elif in_ratio > ratio[1]:
    w, h = max(1, int(round(height * ratio[1]))), height
  else:
    w, h = width, height
  left, top = (width - w) // 2, (height - h) // 2
  return (left, top, left + w, top + h)


def center_crop_box(width: int, height: int, fraction: float = 1.0) -> Box:
  """The centered square window of side fraction * min(width, height)."""
  side = fraction * min(width, height)
  left, top = (width - side) / 2, (height - side) / 2
  return (left, top, left + side, top + side)


@contextlib.contextmanager
def open_image(image: sources.Image) -> Iterator[Image.Image]:
  """Opens a path, encoded bytes or a uint8/uint16 array as a PIL image.

  Files are opened lazily (header only) and closed on exit.
  """
  if isinstance(image, np.ndarray):
    yield _from_array(image)
  elif isinstance(image, (bytes, bytearray, memoryview)):
    with Image.open(io.BytesIO(image)) as img:
      yield img
  else:
    with Image.open(image) as img:
      yield img


def _from_array(array: np.ndarray) -> Image.Image:
  """[H, W] or [H, W, C] uint8/uint16 array -> PIL image."""
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.dtype == np.uint16 and array.ndim == 2:
    return Image.fromarray(array.astype(np.float32) / 65535.0)
  if array.dtype != np.uint8:
    raise ValueError(f'Unsupported image array dtype {array.dtype} '
                     f'(shape {array.shape}); expected uint8 or uint16.')
  if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4)):
    return Image.fromarray(np.ascontiguousarray(array))  # L, RGB or RGBA.
  raise ValueError(f'Unsupported image array shape {array.shape}.')


def normalize_mode(img: Image.Image, channels: int) -> Image.Image:
  """Converts any PIL mode to 'L' or 'RGB' (8 bits) or 'F' (16-bit grey).

  Transparent pixels are composited on white. 'F' images stay grey whatever
  `channels`; the caller replicates them.
  """
  mode = img.mode
  if mode in _SIXTEEN_BIT_MODES:
    values = np.asarray(img, dtype=np.float32) / 65535.0
    return Image.fromarray(np.clip(values, 0.0, 1.0))  # Mode 'F'.
  if mode == 'F':
    return img
  if mode in _TRANSPARENT_MODES or 'transparency' in img.info:
    rgba = img.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    img = Image.alpha_composite(white, rgba).convert('RGB')
    mode = 'RGB'
  target = 'L' if channels == 1 else 'RGB'
  if mode != target:
    img = img.convert(target)
  return img


class Preprocessor:
  """Image -> float32 [size, size, channels] in [0, 1] (see module doc).

  Attributes are the `config.data` fields of the same names; picklable.
  """

  def __init__(self, *, image_size: int, channels: int,
               random_crop: bool = True,
               crop_scale: tuple[float, float] = (0.8, 1.0),
               crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
               random_flip: bool = True, eval_crop_fraction: float = 1.0,
               resize_method: str = 'bicubic'):
    if resize_method not in RESAMPLE:
      raise ValueError(f'Unknown resize_method {resize_method!r}; expected one'
                       f' of {sorted(RESAMPLE)}.')
    self.image_size = image_size
    self.channels = channels
    self.random_crop = random_crop
    self.crop_scale = tuple(crop_scale)
    self.crop_ratio = tuple(crop_ratio)
    self.random_flip = random_flip
    self.eval_crop_fraction = eval_crop_fraction
    self.resize_method = resize_method

  @property
  def output_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, self.channels)

  def _box(self, width: int, height: int,
           rng: np.random.Generator | None) -> Box:
    if rng is not None and self.random_crop:
      return random_resized_crop_box(rng, width, height, self.crop_scale,
                                     self.crop_ratio)
    return center_crop_box(width, height, self.eval_crop_fraction)

  def __call__(self, image: sources.Image,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Decodes and transforms one image.

    Args:
      image: a file path, encoded bytes, or a uint8 [H, W(, C)] / uint16
        [H, W] array.
      rng: training randomness (crop window, flip); None for evaluation.

    Returns:
      float32 [image_size, image_size, channels] in [0, 1].

    Raises:
      OSError, ValueError, SyntaxError, PIL.UnidentifiedImageError: the image
      cannot be decoded (the pipeline catches these).
    """
    size = self.image_size
    with open_image(image) as img:
      orientation = 1
      if img.format is not None:  # An encoded image (not from an array).
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
      raw_w, raw_h = img.size
      width, height = (raw_h, raw_w) if orientation in (5, 6, 7, 8) else (
          raw_w, raw_h)
      box = self._box(width, height, rng)
      shrink = min(box[2] - box[0], box[3] - box[1]) / size
      if img.format == 'JPEG' and shrink >= 2:
        img.draft(img.mode, (math.ceil(raw_w / shrink),
                             math.ceil(raw_h / shrink)))
      if orientation != 1:
        img = ImageOps.exif_transpose(img)
      img = normalize_mode(img, self.channels)
      if img.size != (width, height):  # Decoded at a reduced scale.
        sx, sy = img.size[0] / width, img.size[1] / height
        box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
      if box != (0, 0, img.size[0], img.size[1]) or img.size != (size, size):
        img = img.resize((size, size), RESAMPLE[self.resize_method], box=box)
      if rng is not None and self.random_flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
      array = np.asarray(img)
    if array.ndim == 2:
      array = array[:, :, None]
      if self.channels == 3:
        array = np.repeat(array, 3, axis=2)
    if img.mode == 'F':
      return np.clip(array, 0.0, 1.0).astype(np.float32)
    out = np.empty(array.shape, np.float32)
    np.copyto(out, array)
    out /= np.float32(255.0)
    return out
