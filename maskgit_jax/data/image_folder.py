"""A folder of images as a source: indexed once, the index cached as JSON.

Layouts:
  root/<class name>/**/<image>   conditional: labels are the positions of the
                                 class folder names in sorted order;
  root/<image>                   unconditional (no sub-folders): label 0,
                                 num_classes 1, class_names (basename(root),).

Images are files with one of IMAGE_EXTENSIONS (case-insensitive); names
starting with '.' are ignored. Sub-folders of a class folder are searched
recursively and symbolic links are followed.

Bad input, decided per case:
  missing root                 FileNotFoundError naming it;
  root is not a folder         ValueError naming it;
  no image anywhere            ValueError naming the root;
  a class folder with no (readable) image
                               ValueError naming the folder: its label would
                               never be trained; remove the folder;
  non-image files (by extension), images directly in root next to class
  folders                      skipped, counted in one warning;
  zero-byte, corrupt, non-image content with an image extension
                               (validate='header': the header is parsed;
                               'full': the file is decoded)
                               skipped, counted in one warning (with examples);
  a file that passes the header check but fails to decode later (e.g. a
  truncated JPEG): handled when loading (see maskgit_jax.data.pipeline).

Indexing lists the folder (names, sizes, modification times; no decoding)
and validates new or changed files. The index is cached in
`cache_dir/image_folder_index_<hash of root>.json` and reused as is when the
listing's hash is unchanged; when it changed, only new or changed files are
validated again.
"""
import concurrent.futures
import hashlib
import json
import os
from typing import Any

from absl import logging
import numpy as np
from PIL import Image

from maskgit_jax.common import files

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.webp', '.bmp',
                    '.gif', '.tif', '.tiff')
_LEVELS = {'none': 0, 'header': 1, 'full': 2}
_CACHE_FORMAT = 1
_EXAMPLES = 3  # Example paths quoted per warning.


def is_image_name(name: str) -> bool:
  """Whether a file name has one of IMAGE_EXTENSIONS."""
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(folder: str, rel: str, files: list[tuple[str, int, int]],
          others: list[str]) -> None:
  """Appends (relpath, size, mtime_ns) of the images under folder, recursively.

  Non-image files go to `others` (relative paths).
  """
  with os.scandir(folder) as it:
    entries = sorted(it, key=lambda e: e.name)
  for entry in entries:
    if entry.name.startswith('.'):
      continue
    relpath = entry.name if not rel else rel + '/' + entry.name
    if entry.is_dir():
      _walk(entry.path, relpath, files, others)
    elif entry.is_file():
      if is_image_name(entry.name):
        st = entry.stat()
        files.append((relpath, st.st_size, st.st_mtime_ns))
      else:
        others.append(relpath)


def check_file(path: str, level: str) -> str | None:
  """Returns None if the image at `path` passes the check, else the reason.

  Args:
    path: an image file.
    level: 'none' (no check), 'header' (PIL parses the header: identifies the
      format, size and mode) or 'full' (PIL decodes all pixels).
  """
  if level == 'none':
    return None
  try:
    if os.path.getsize(path) == 0:
      return 'empty (zero-byte) file'
    with Image.open(path) as img:
      if img.size[0] < 1 or img.size[1] < 1:
        return f'image has no pixels ({img.size})'
      if level == 'full':
        img.load()
  except Exception as e:  # pylint: disable=broad-except
    return f'{type(e).__name__}: {e}'.splitlines()[0][:200]
  return None


def _listing_hash(files: list[tuple[str, int, int]]) -> str:
  digest = hashlib.sha1()
  for relpath, size, mtime in files:
    digest.update(f'{relpath}\0{size}\0{mtime}\n'.encode('utf-8',
                                                         'surrogateescape'))
  return digest.hexdigest()


def cache_path(cache_dir: str, root: str) -> str:
  """The cache file of the index of `root` in `cache_dir`."""
  key = hashlib.sha1(root.encode('utf-8', 'surrogateescape')).hexdigest()[:16]
  return os.path.join(cache_dir, f'image_folder_index_{key}.json')


def _read_cache(path: str, root: str) -> dict[str, Any] | None:
  try:
    with open(path, 'r', encoding='utf-8') as f:
      cache = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    logging.warning('Ignoring unreadable image folder index %s (%s).', path, e)
    return None
  if cache.get('format') != _CACHE_FORMAT or cache.get('root') != root:
    return None
  return cache


def write_json_cache(path: str, cache: dict[str, Any],
                     what: str = 'the image folder index') -> None:
  """Writes a JSON cache file atomically (concurrent writers of the same
  cache are safe); a failure is a warning, the cache being optional."""
  try:
    files.write_text(path, json.dumps(cache))
  except OSError as e:
    logging.warning('Could not write %s %s (%s).', what, path, e)



def build_index(root: str, *, cache_dir: str | None = None,
                validate: str = 'header',
                num_threads: int = 8) -> dict[str, Any]:
  """Lists, validates and caches the images of `root`.

  Args:
    root: the image folder (see the module docstring for layouts).
    cache_dir: where the JSON index is cached; None: no cache.
    validate: 'none', 'header' or 'full' (see `check_file`).
    num_threads: threads validating files.

  Returns:
    A dict with 'root' (absolute), 'files' (sorted relative paths of the
    usable images), 'labels' (int32 [n]), 'class_names', 'conditional',
    'bad' (list of (relpath, reason)), 'others' (non-image relative paths),
    'ignored' (images directly in root beside class folders), 'from_cache'.

  Raises:
    FileNotFoundError: root does not exist.
    ValueError: root is not a folder, has no image, or a class folder has
      no readable image.
  """
  if validate not in _LEVELS:
    raise ValueError(f'validate must be one of {list(_LEVELS)}, got '
                     f'{validate!r}.')
  root = os.path.abspath(os.path.expanduser(os.fspath(root)))
  if not os.path.exists(root):
    raise FileNotFoundError(f'Image folder not found: {root}')
  if not os.path.isdir(root):
    raise ValueError(f'Image folder path is not a folder: {root}')

  files: list[tuple[str, int, int]] = []
  others: list[str] = []
  _walk(root, '', files, others)
  with os.scandir(root) as it:
    class_names = sorted(
        e.name for e in it if e.is_dir() and not e.name.startswith('.'))
  conditional = bool(class_names)
  ignored = []
  if conditional:
    ignored = [f[0] for f in files if '/' not in f[0]]
    files = [f for f in files if '/' in f[0]]
  listing = _listing_hash(files)

  level = _LEVELS[validate]
  cached = _read_cache(cache_path(cache_dir, root), root) if cache_dir else None
  from_cache = bool(cached and cached['listing_sha1'] == listing and
                    cached['level'] >= level)
  if from_cache:
    status = {e[0]: e[4] for e in cached['entries']}
  else:
    previous = {}
    if cached:  # Reuse the checks of unchanged files.
      previous = {e[0]: e for e in cached['entries']}
    status, levels, to_check = {}, {}, []
    for relpath, size, mtime in files:
      old = previous.get(relpath)
      if old and old[1] == size and old[2] == mtime and (
          old[3] >= level or old[4] is not None):
        status[relpath], levels[relpath] = old[4], old[3]
      else:
        to_check.append(relpath)
        levels[relpath] = level
    if to_check:
      with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        results = pool.map(
            lambda r: check_file(os.path.join(root, r), validate), to_check)
        status.update(zip(to_check, results))
    if cache_dir:
      entries = [[r, s, m, levels[r], status[r]] for r, s, m in files]
      write_json_cache(cache_path(cache_dir, root), {
          'format': _CACHE_FORMAT, 'root': root, 'listing_sha1': listing,
          'level': min(levels.values(), default=level), 'entries': entries})

  good = [r for r, _, _ in files if status[r] is None]
  bad = [(r, status[r]) for r, _, _ in files if status[r] is not None]
  if conditional:
    index_of = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index_of[r.split('/', 1)[0]] for r in good],
                      dtype=np.int32)
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
      folder = os.path.join(root, empty[0])
      more = f' (and {len(empty) - 1} more class folders)' if len(
          empty) > 1 else ''
      raise ValueError(
          f'Class folder {folder} has no readable image{more}: its label '
          'would never be trained. Remove it or add images (extensions '
          f'{", ".join(IMAGE_EXTENSIONS)}).')
  else:
    labels = np.zeros(len(good), dtype=np.int32)
    class_names = [os.path.basename(root) or root]
  if not good:
    raise ValueError(
        f'No readable image found in {root} (extensions '
        f'{", ".join(IMAGE_EXTENSIONS)}; {len(bad)} unreadable, '
        f'{len(others)} other files).')
  return {
      'root': root, 'files': good, 'labels': labels,
      'class_names': tuple(class_names), 'conditional': conditional,
      'bad': bad, 'others': others, 'ignored': ignored,
      'from_cache': from_cache,
  }


# The warnings given in this process: a run opens a folder once per stage
# (and the evaluation once more) and warns once.
_WARNED: set[str] = set()


def _warn_skipped(index: dict[str, Any]) -> None:
  """One warning counting every skipped file, with a few examples (once per
  process for the same folder and the same skipped files)."""
  parts = []
  if index['bad']:
    examples = '; '.join(f'{r}: {why}' for r, why in index['bad'][:_EXAMPLES])
    parts.append(f'{len(index["bad"])} unreadable image files (e.g. '
                 f'{examples})')
  if index['others']:
    parts.append(f'{len(index["others"])} non-image files (e.g. '
                 f'{", ".join(index["others"][:_EXAMPLES])})')
  if index['ignored']:
    parts.append(f'{len(index["ignored"])} images directly in the root, '
                 'which has class folders (e.g. '
                 f'{", ".join(index["ignored"][:_EXAMPLES])})')
  if parts:
    message = (f'Image folder {index["root"]}: skipped '
               f'{" and ".join(parts)}.')
    if message not in _WARNED:
      _WARNED.add(message)
      logging.warning('%s', message)


class ImageFolderSource:
  """Records (absolute path, label) of the usable images of a folder."""

  def __init__(self, root: str, *, cache_dir: str | None = None,
               validate: str = 'header'):
    index = build_index(root, cache_dir=cache_dir, validate=validate)
    _warn_skipped(index)
    self.root = index['root']
    self.files = index['files']
    self.labels = index['labels']
    self.class_names = index['class_names']
    self.num_classes = len(self.class_names)
    self.conditional = index['conditional']
    self.num_skipped = len(index['bad'])
    self.from_cache = index['from_cache']

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> tuple[str, int]:
    return os.path.join(self.root, self.files[index]), int(self.labels[index])

  def describe(self, index: int) -> str:
    return os.path.join(self.root, self.files[index])
