"""Small file utilities that every part of the package shares.

- `atomic_write` / `atomic_writes`: write through a temporary file in the
  same folder and rename it into place, so a failure (or a crash) never
  leaves a half-written file and never replaces a good one; `write_text`
  and `write_bytes` for whole files.
- `read_config_json` / `write_config_json`: a run's resolved `config.json`.
- `check_image_path`: that PIL can write an output image by its extension
  (and `check_output_location`: that a file can be made there).
"""

import json
import os
import uuid
from typing import Any, Callable, List, Sequence, Tuple

import ml_collections
from PIL import Image


def atomic_write(path: str, write_fn: Callable[[str], Any]) -> str:
  """Writes `path` via `write_fn(temporary_path)`, then renames it.

  A failure leaves any existing file at `path` untouched. Returns `path`.
  """
  return atomic_writes([(path, write_fn)])[0]


def atomic_writes(writes: Sequence[Tuple[str, Callable[[str], Any]]]
                  ) -> List[str]:
  """Several `(path, write_fn)` as one: all files are renamed into place
  only after every one was written, so a failure writes none of them.

  Returns the paths.
  """
  temporaries = []
  try:
    for path, write_fn in writes:
      directory = os.path.dirname(os.path.abspath(path))
      os.makedirs(directory, exist_ok=True)
      tmp = _create_temporary(directory, os.path.splitext(path)[1])
      temporaries.append(tmp)
      write_fn(tmp)
    for (path, _), tmp in zip(writes, temporaries):
      os.replace(tmp, path)
  finally:
    for tmp in temporaries:
      if os.path.exists(tmp):
        os.remove(tmp)
  return [path for path, _ in writes]


def write_text(path: str, text: str) -> str:
  """`atomic_write` of a text file."""
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
  return atomic_write(path, write)


def bytes_writer(data: bytes) -> Callable[[str], None]:
  """A `write_fn` for `atomic_write(s)` that writes `data` (and closes)."""
  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(data)
  return write


def write_bytes(path: str, data: bytes) -> str:
  """`atomic_write` of a binary file (its folder is created if missing)."""
  return atomic_write(path, bytes_writer(data))


def _create_temporary(directory: str, suffix: str) -> str:
  """A new empty file `directory/.tmp-<random><suffix>`.

  Unlike `tempfile.mkstemp` (mode 0600) its mode follows the umask, like any
  file the user writes.
  """
  while True:
    path = os.path.join(directory, f".tmp-{uuid.uuid4().hex}{suffix}")
    try:
      os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
      return path
    except FileExistsError:
      continue


def check_output_location(path: str) -> None:
  """Raises ValueError when `path` cannot become a file: it is a folder, or
  its nearest existing ancestor is a file (checked before the work that
  would end in writing it)."""
  if os.path.isdir(path):
    raise ValueError(f"Cannot write {path}: it is a folder.")
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent) and os.path.dirname(parent) != parent:
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ValueError(f"Cannot write {path}: {parent} is a file, not a "
                     "folder.")


def check_image_path(path: str, formats: Sequence[str] = ()) -> None:
  """Raises ValueError unless PIL can write `path` (by its extension) where
  it is (`check_output_location`).

  Args:
    path: an output file name.
    formats: if given, the PIL formats allowed, e.g. ("GIF",).
  """
  ext = os.path.splitext(path)[1].lower()
  fmt = Image.registered_extensions().get(ext)
  writable = fmt in Image.SAVE and (not formats or fmt in formats)
  if not writable:
    wanted = ("/".join(f".{f.lower()}" for f in formats) if formats else
              "that of an image format PIL writes, e.g. .png")
    raise ValueError(f"Cannot write {path}: its extension is not {wanted}.")
  check_output_location(path)


def config_to_json(config: ml_collections.ConfigDict) -> str:
  """The JSON text of a config, as `config.json` records it."""
  return config.to_json_best_effort(indent=1, sort_keys=True)


def write_config_json(config: ml_collections.ConfigDict, path: str) -> str:
  """Writes `config` as JSON to `path`, atomically."""
  return write_text(path, config_to_json(config))


def read_config_json(path: str) -> ml_collections.ConfigDict:
  """Reads a `config.json` (as training writes it) into a ConfigDict.

  JSON lists become tuples, as the config files write sequences.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a JSON object.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Config file not found: {path}")
  try:
    with open(path) as f:
      values = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable JSON config ({e}).") from None
  if not isinstance(values, dict):
    raise ValueError(f"{path}: expected a JSON object, found "
                     f"{type(values).__name__}.")
  return ml_collections.ConfigDict(_lists_to_tuples(values))


def _lists_to_tuples(value):
  if isinstance(value, dict):
    return {k: _lists_to_tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_lists_to_tuples(v) for v in value)
  return value
