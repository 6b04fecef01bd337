"""What a training run can learn from an image folder: classes and colour.

    info = folder_info.inspect_folder(root, cache_dir=workdir + '/data_index')
    info.class_names   # sorted class sub-folder names; a flat folder:
                       # (basename(root),), info.conditional False
    info.num_classes   # len(class_names): 1 for a flat folder (unconditional,
                       # every label 0), as `image_folder` labels it
    info.channels      # 3 if any usable image is colour, 1 if all are grey

Classes come from `image_folder.build_index`: the same index (and cache) the
training data is read from, so inspecting costs nothing extra when training
starts. Channels come from each image's mode as the file header states it
(`PIL.Image.open(path).mode`; no pixel is decoded): grey modes are 1, L, LA,
La, I, I;16*, F, and palette images (P, PA) whose palette entries all have
R = G = B; every other mode (RGB, RGBA, CMYK, YCbCr, colour palettes, ...)
is colour. An RGB file whose pixels happen to be grey counts as colour.

The scan stops at the first colour image, so a colour folder costs a few
headers. An all-grey folder is read once; the answer is cached beside the
index as `cache_dir/image_folder_channels_<hash of root>.json`, valid while
the usable images' paths, sizes and modification times are unchanged.
"""
import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import Optional

from PIL import Image

from maskgit_jax.data import image_folder

GREY_MODES = frozenset(
    ('1', 'L', 'LA', 'La', 'I', 'F', 'I;16', 'I;16L', 'I;16B', 'I;16N'))
PALETTE_MODES = ('P', 'PA')
_CACHE_FORMAT = 1
_FIRST_CHUNK = 16  # Headers read before the listing is hashed for the cache.
_CHUNK = 512


@dataclasses.dataclass(frozen=True)
class FolderInfo:
  """Facts about an image folder that a config can be derived from.

  Attributes:
    root: the absolute folder path.
    class_names: sorted class sub-folder names, or (basename(root),) for a
      flat folder.
    conditional: False for a flat folder (every label is 0).
    num_images: usable images (unreadable files are not counted).
    channels: 3 if any usable image is colour, else 1.
    colour_example: 'relative/path is MODE' for the first colour image
      found, or None when every image is grey.
    channels_from_cache: the channel count came from the cache.
  """
  root: str
  class_names: tuple[str, ...]
  conditional: bool
  num_images: int
  channels: int
  colour_example: Optional[str]
  channels_from_cache: bool = False

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def describe_classes(self, limit: int = 6) -> str:
    """'9 classes (activities, animals_nature, ...)' or 'no class
    sub-folders (unconditional: 1 class)'."""
    if not self.conditional:
      return 'no class sub-folders (unconditional: 1 class)'
    names = ', '.join(self.class_names[:limit])
    more = ', ...' if self.num_classes > limit else ''
    return f'{self.num_classes} classes ({names}{more})'

  def describe_channels(self) -> str:
    """'colour images (3 channels; e.g. a/b.png is RGBA)' or 'only grey
    images (1 channel)'."""
    if self.channels == 3:
      return f'colour images (3 channels; e.g. {self.colour_example})'
    return 'only grey images (1 channel)'


def image_mode(path: str) -> tuple[Optional[str], bool]:
  """`(mode, is_grey)` of an image file from its header; (None, True) when
  the file cannot be opened (it is skipped, not counted as colour)."""
  try:
    with Image.open(path) as img:
      mode = img.mode
      if mode in GREY_MODES:
        return mode, True
      if mode in PALETTE_MODES:
        return mode, _grey_palette(img)
      return mode, False
  except Exception:  # pylint: disable=broad-except
    return None, True


def _grey_palette(img: Image.Image) -> bool:
  """True when every palette entry has R = G = B (read from the header)."""
  palette = img.palette
  if palette is None or not palette.mode.startswith('RGB'):
    return False
  data, step = bytes(palette.palette), len(palette.mode)
  return all(data[i] == data[i + 1] == data[i + 2]
             for i in range(0, len(data) - 2, step))


def _listing_sha1(root: str, files: list[str]) -> str:
  """Hash of (path, size, mtime) of `files` (relative to `root`)."""
  digest = hashlib.sha1(root.encode('utf-8', 'surrogateescape'))
  for rel in files:
    try:
      st = os.stat(os.path.join(root, rel))
      size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
      size = mtime = -1
    digest.update(f'{rel}\0{size}\0{mtime}\n'.encode('utf-8',
                                                     'surrogateescape'))
  return digest.hexdigest()


def channels_cache_path(cache_dir: str, root: str) -> str:
  key = hashlib.sha1(root.encode('utf-8', 'surrogateescape')).hexdigest()[:16]
  return os.path.join(cache_dir, f'image_folder_channels_{key}.json')


def _read_cache(path: str, root: str, listing: str) -> Optional[dict]:
  try:
    with open(path, 'r', encoding='utf-8') as f:
      cache = json.load(f)
  except (OSError, ValueError):
    return None
  if (not isinstance(cache, dict) or cache.get('format') != _CACHE_FORMAT or
      cache.get('root') != root or cache.get('listing_sha1') != listing or
      cache.get('channels') not in (1, 3)):
    return None
  return cache


def _first_colour(root: str, files: list[str], start: int, stop: int,
                  num_threads: int) -> Optional[str]:
  """'rel is MODE' for the first colour image in files[start:stop], or
  None."""
  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    for lo in range(start, stop, _CHUNK):
      chunk = files[lo:min(stop, lo + _CHUNK)]
      modes = pool.map(lambda r: image_mode(os.path.join(root, r)), chunk)
      for rel, (mode, grey) in zip(chunk, modes):
        if not grey:
          return f'{rel} is {mode}'
  return None


def folder_channels(root: str, files: list[str], *,
                    cache_dir: Optional[str] = None,
                    num_threads: int = 8) -> tuple[int, Optional[str], bool]:
  """`(channels, colour_example, from_cache)` of the images `files` (paths
  relative to `root`): 3 if any is colour, else 1 (see the module doc)."""
  first = _first_colour(root, files, 0, min(_FIRST_CHUNK, len(files)), 1)
  if first:
    return 3, first, False
  path = channels_cache_path(cache_dir, root) if cache_dir else None
  listing = _listing_sha1(root, files) if path else ''
  cached = _read_cache(path, root, listing) if path else None
  if cached:
    return cached['channels'], cached.get('colour_example'), True
  example = _first_colour(root, files, _FIRST_CHUNK, len(files), num_threads)
  channels = 3 if example else 1
  if path:
    image_folder.write_json_cache(
        path, {'format': _CACHE_FORMAT, 'root': root, 'listing_sha1': listing,
               'channels': channels, 'colour_example': example},
        'the folder channel cache')
  return channels, example, False


def inspect_folder(root: str, *, cache_dir: Optional[str] = None,
                   validate: str = 'header') -> FolderInfo:
  """Classes and channels of the image folder `root`.

  Args:
    root: an image folder (layouts: `maskgit_jax.data.image_folder`).
    cache_dir: where the folder index and the channel answer are cached
      (the run's `WORKDIR/data_index`); None: no cache.
    validate: the index's validation level ('none', 'header', 'full'); use
      `config.data.validate` so training reuses the same cached index.

  Raises:
    FileNotFoundError, ValueError: as `image_folder.build_index` (missing
      folder, no readable image, a class folder without images).
  """
  index = image_folder.build_index(root, cache_dir=cache_dir,
                                   validate=validate)
  channels, example, from_cache = folder_channels(
      index['root'], index['files'], cache_dir=cache_dir)
  return FolderInfo(
      root=index['root'], class_names=tuple(index['class_names']),
      conditional=bool(index['conditional']), num_images=len(index['files']),
      channels=channels, colour_example=example,
      channels_from_cache=from_cache)
