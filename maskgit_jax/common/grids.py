"""Image grids, decoding strips and GIFs as PNG/GIF files (PIL only)."""

import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Float images in [0, 1] -> uint8; grey `[..., 1]` -> `[...]`."""
  images = np.clip(np.asarray(images, np.float32), 0., 1.)
  images = np.round(images * 255).astype(np.uint8)
  if images.shape[-1] == 1:
    images = images[..., 0]
  return images


def grid(images: np.ndarray, padding: int = 2, pad_value: float = 1.0,
         scale: int = 1) -> np.ndarray:
  """`[rows, cols, H, W, C]` -> one float image `[R, C', C]` with padding."""
  images = np.asarray(images, np.float32)
  if images.ndim != 5:
    raise ValueError(f"grid expects [rows, cols, H, W, C], got {images.shape}.")
  if scale > 1:
    images = images.repeat(scale, axis=2).repeat(scale, axis=3)
  rows, cols, h, w, c = images.shape
  out = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding,
                 c), pad_value, np.float32)
  for r in range(rows):
    for k in range(cols):
      y, x = padding + r * (h + padding), padding + k * (w + padding)
      out[y:y + h, x:x + w] = images[r, k]
  return out


def save_grid(images: np.ndarray, path: str,
              row_labels: Optional[Sequence[str]] = None, padding: int = 2,
              scale: int = 1) -> str:
  """Writes `[rows, cols, H, W, C]` images as one PNG, rows labelled on the left."""
  canvas = Image.fromarray(to_uint8(grid(images, padding, 1.0, scale)))
  if row_labels:
    canvas = _label_rows(canvas, row_labels, images.shape[2] * scale, padding)
  _makedirs(path)
  canvas.save(path)
  return path


def _label_rows(canvas: Image.Image, labels: Sequence[str], cell: int,
                padding: int) -> Image.Image:
  font = ImageFont.load_default()
  width = max(int(ImageDraw.Draw(canvas).textlength(str(t), font=font))
              for t in labels) + 8
  mode = "RGB" if canvas.mode == "RGB" else "L"
  white = (255, 255, 255) if mode == "RGB" else 255
  black = (0, 0, 0) if mode == "RGB" else 0
  out = Image.new(mode, (canvas.width + width, canvas.height), white)
  out.paste(canvas.convert(mode), (width, 0))
  draw = ImageDraw.Draw(out)
  for r, text in enumerate(labels):
    y = padding + r * (cell + padding) + cell // 2 - 5
    draw.text((4, y), str(text), fill=black, font=font)
  return out


def save_gif(frames: np.ndarray, path: str, duration_ms: int = 300,
             scale: int = 1) -> str:
  """Writes frames `[T, H, W, C]` in [0, 1] as a looping GIF."""
  frames = np.asarray(frames)
  if scale > 1:
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
  images = [Image.fromarray(f) for f in to_uint8(frames)]
  _makedirs(path)
  images[0].save(path, save_all=True, append_images=images[1:],
                 duration=duration_ms, loop=0)
  return path


def _makedirs(path: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
