"""Geometry of editing: latent masks, compositing, outpainting windows.

Pure numpy helpers; `maskgit_jax.libml.sampling.MaskGitSampler` runs the
models. Images are float `[H, W, C]` in [0, 1]; token grids are `[h, w]` with
`patch = H // h` pixels per token.
"""

import dataclasses
from typing import Iterator, Optional, Tuple

import numpy as np
from PIL import Image
from PIL import ImageFilter


@dataclasses.dataclass(frozen=True)
class Box:
  """A pixel box: top, left, height, width (the release's `Bbox`)."""
  top: int
  left: int
  height: int
  width: int

  @classmethod
  def parse(cls, text: str) -> "Box":
    """Parses 'top_left_height_width' (the release's format) or 'top,left,h,w'."""
    parts = text.replace(",", "_").split("_")
    try:
      values = [int(p) for p in parts]
    except ValueError:
      values = []
    if len(values) != 4:
      raise ValueError(f"Box {text!r}: expected four integers "
                       "top_left_height_width, e.g. 64_32_128_96.")
    return cls(*values)

  def validate(self, height: int, width: int) -> None:
    """Raises ValueError unless the box lies inside a `height x width` image."""
    if (self.height <= 0 or self.width <= 0 or self.top < 0 or self.left < 0 or
        self.top + self.height > height or self.left + self.width > width):
      raise ValueError(
          f"Box top={self.top} left={self.left} height={self.height} "
          f"width={self.width} is empty or outside the {height}x{width} image.")


def latent_mask_from_box(box: Box, image_size: int,
                         latent_size: int) -> np.ndarray:
  """The release's latent mask for a box: the covered tokens, grown by one.

  Returns float32 `[latent_size, latent_size]`, 1 where tokens are regenerated.
  """
  box.validate(image_size, image_size)
  p = image_size // latent_size
  t = max(0, box.top // p - 1)
  b = min(latent_size, box.height // p + box.top // p + 1)
  l = max(0, box.left // p - 1)
  r = min(latent_size, box.left // p + box.width // p + 1)
  mask = np.zeros((latent_size, latent_size), np.float32)
  mask[t:b, l:r] = 1
  return mask


def latent_mask_from_pixels(mask: np.ndarray, latent_size: int,
                            grow: int = 1) -> np.ndarray:
  """Latent mask for a pixel mask `[H, W]` (nonzero = edit).

  A token is masked when any of its pixels is, then the mask grows by `grow`
  tokens in every direction (as the release grows a box). Returns float32
  `[latent_size, latent_size]`.
  """
  mask = np.asarray(mask)
  if mask.ndim == 3:
    mask = mask.max(axis=-1)
  h, w = mask.shape
  if h != w or h % latent_size:
    raise ValueError(f"Pixel mask of shape {mask.shape} does not tile into "
                     f"{latent_size}x{latent_size} tokens.")
  p = h // latent_size
  tokens = (mask > 0).reshape(latent_size, p, latent_size, p).any(axis=(1, 3))
  out = tokens.copy()
  for dy in range(-grow, grow + 1):
    for dx in range(-grow, grow + 1):
      shifted = np.zeros_like(tokens)
      ys = slice(max(dy, 0), latent_size + min(dy, 0))
      yd = slice(max(-dy, 0), latent_size + min(-dy, 0))
      xs = slice(max(dx, 0), latent_size + min(dx, 0))
      xd = slice(max(-dx, 0), latent_size + min(-dx, 0))
      shifted[yd, xd] = tokens[ys, xs]
      out |= shifted
  return out.astype(np.float32)


def release_blur_radius(image_size: int) -> int:
  """The release's compositing blur: `image_size // 16 - 1` pixels (>= 0)."""
  return max(0, image_size // 16 - 1)


def composite(original: np.ndarray, generated: np.ndarray,
              latent_mask: np.ndarray,
              blur_radius: Optional[int] = None) -> np.ndarray:
  """Blends `generated` into `original` where the latent mask is set.

  The latent mask is resized to the image and blurred (Gaussian,
  `blur_radius`, default `release_blur_radius`), as in the release's demo.
  Pixels where the blurred mask is 0 are exactly the original's.

  Args:
    original, generated: `[..., H, W, C]`.
    latent_mask: `[h, w]`, 1 = generated.
    blur_radius: pixels.

  Returns:
    `[..., H, W, C]` float32.
  """
  height, width = original.shape[-3:-1]
  if blur_radius is None:
    blur_radius = release_blur_radius(max(height, width))
  m = Image.fromarray(np.uint8(np.asarray(latent_mask) * 255))
  m = m.resize((width, height), Image.NEAREST)
  if blur_radius:
    m = m.filter(ImageFilter.GaussianBlur(radius=blur_radius))
  alpha = (np.float32(m) / 255.)[:, :, None]
  return (np.asarray(generated, np.float32) * alpha +
          np.asarray(original, np.float32) * (1 - alpha))


def tokens_to_pixels(n: int, patch: int) -> int:
  return n * patch


def pixels_to_tokens(pixels: int, patch: int) -> int:
  """Whole tokens covering `pixels` (rounded up)."""
  if pixels < 0:
    raise ValueError(f"Outpainting extent must be >= 0 pixels, got {pixels}.")
  return -(-pixels // patch)


def outpaint_windows(known: np.ndarray, window: int) -> Iterator[Tuple[int, int]]:
  """Yields window corners that together fill every unknown token.

  Greedy: each step takes the `window x window` window that contains unknown
  tokens and the most known ones (ties: the first in raster order), marks its
  tokens known and repeats. `known` is a bool `[H, W]` grid with H, W >=
  `window`; it is updated in place.
  """
  height, width = known.shape
  if height < window or width < window:
    raise ValueError(f"Canvas {height}x{width} is smaller than the window "
                     f"{window}x{window}.")
  while not known.all():
    integral = np.pad(known.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = (integral[window:, window:] - integral[:-window, window:] -
              integral[window:, :-window] + integral[:-window, :-window])
    counts = np.where(counts < window * window, counts, -1)
    y, x = np.unravel_index(np.argmax(counts), counts.shape)
    yield int(y), int(x)
    known[y:y + window, x:x + window] = True
