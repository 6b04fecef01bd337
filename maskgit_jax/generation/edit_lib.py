"""Editing image files: loading, masks, variations and result grids.

The library behind `python -m maskgit_jax.sample --mode=inpaint|outpaint|edit`;
the notebook calls it too. Images are float32 `[H, W, C]` in [0, 1] at the
models' size; `MaskGitSampler` does the editing itself.

    image = edit_lib.load_image("photo.png", sampler.image_size,
                                sampler.tokenizer.channels)
    variations = sampler.inpaint(image, editing.Box(8, 8, 16, 16), label=None,
                                 rng=jax.random.PRNGKey(0), num_samples=4)
    edit_lib.write_edit_grid("inpaint.png", image, variations)
"""

import os
from typing import Tuple, Union

import jax
import numpy as np
from PIL import Image

from maskgit_jax.common import files
from maskgit_jax.common import grids
from maskgit_jax.data import preprocess
from maskgit_jax.libml import editing
from maskgit_jax.libml import sampling

ImageSource = Union[str, os.PathLike, np.ndarray]
UNKNOWN_GREY = 0.5  # How new (unknown) canvas areas are drawn.


def _check_file(path: str, what: str) -> str:
  """`path` as a string; FileNotFoundError naming `what` if it is missing."""
  path = os.fspath(path)
  if os.path.isdir(path):
    raise FileNotFoundError(f"{what} file not found: {path} is a folder")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what} file not found: {path}")
  return path


def load_image(source: ImageSource, image_size: int, channels: int,
               resize_method: str = "bicubic") -> np.ndarray:
  """Any image file (or uint8 array) at the models' size and channels.

  The image is converted to grey (ITU-R 601-2 luma) or RGB, transparent
  pixels composited on white, then center-cropped to a square and resized to
  `image_size` (the evaluation preprocessing of the input pipeline).

  Args:
    source: a file path, or a uint8 `[H, W]` / `[H, W, C]` array.
    image_size: side of the output.
    channels: 1 or 3.
    resize_method: a `maskgit_jax.data.preprocess.RESAMPLE` name.

  Returns:
    float32 `[image_size, image_size, channels]` in [0, 1].

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not a readable image.
  """
  name = "the image array"
  if not isinstance(source, np.ndarray):
    source = name = _check_file(source, "Image")
  preprocessor = preprocess.Preprocessor(
      image_size=image_size, channels=channels, random_crop=False,
      random_flip=False, resize_method=resize_method)
  try:
    return preprocessor(source)
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(f"Cannot read image {name}: {e}") from None


def image_size_of(path: str, what: str = "Image") -> Tuple[int, int]:
  """(width, height) of an image file, read from its header."""
  path = _check_file(path, what)
  try:
    with Image.open(path) as img:
      return img.size
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(f"Cannot read {what.lower()} {path}: {e}") from None


def load_mask(path: str, image_path: str, image_size: int) -> np.ndarray:
  """An inpainting mask file as bool `[image_size, image_size]`.

  The mask must have the input image's size; it is cropped and resized like
  the image (area averaging), and a pixel is filled when any part of it is
  nonzero in the file. Grey or colour files work (any nonzero channel);
  transparent pixels count as white (filled), so flatten masks drawn on a
  transparent background onto black first.
  """
  mask_size = image_size_of(path, "Mask")
  input_size = image_size_of(image_path)
  if mask_size != input_size:
    raise ValueError(
        f"Mask {path} is {mask_size[0]}x{mask_size[1]} pixels but the input "
        f"image {image_path} is {input_size[0]}x{input_size[1]}; they must "
        "match.")
  mask = load_image(path, image_size, 3, resize_method="box")
  return mask.max(axis=-1) > 0


def outpaint_variations(sampler: sampling.MaskGitSampler, image: np.ndarray,
                        rng: jax.Array, num_variations: int,
                        **kwargs) -> np.ndarray:
  """`num_variations` outpaintings `[N, H', W', C]` (see `outpaint`)."""
  return np.stack([
      sampler.outpaint(image, jax.random.fold_in(rng, i), **kwargs)
      for i in range(num_variations)])


def outpaint_extents(sampler: sampling.MaskGitSampler, *, left: int = 0,
                     right: int = 0, up: int = 0,
                     down: int = 0) -> Tuple[int, int, int, int]:
  """The extents in pixels as outpainting uses them (whole tokens)."""
  return tuple(
      editing.pixels_to_tokens(v, sampler.patch) * sampler.patch
      for v in (left, right, up, down))


def place_on_canvas(image: np.ndarray, height: int, width: int, top: int,
                    left: int, fill: float = UNKNOWN_GREY) -> np.ndarray:
  """`image` at (top, left) of a `height x width` canvas filled with `fill`."""
  canvas = np.full((height, width, image.shape[-1]), fill, np.float32)
  canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
  return canvas


def edit_grid(image: np.ndarray, variations: np.ndarray) -> np.ndarray:
  """One row `[1, 1 + N, H, W, C]`: the input, then the variations.

  For outpainting pass the input already placed on the larger canvas
  (`place_on_canvas`).
  """
  variations = np.asarray(variations, np.float32)
  image = np.asarray(image, np.float32)
  if image.shape != variations.shape[1:]:
    raise ValueError(f"Input of shape {image.shape} and variations of shape "
                     f"{variations.shape[1:]} do not fit one grid.")
  return np.concatenate([image[None], variations])[None]


def write_edit_grid(path: str, image: np.ndarray, variations: np.ndarray,
                    scale: int = 1) -> str:
  """Writes `edit_grid(image, variations)` as a PNG (atomically)."""
  cells = edit_grid(image, variations)
  return files.atomic_write(
      path, lambda p: grids.save_grid(cells, p, scale=scale))
