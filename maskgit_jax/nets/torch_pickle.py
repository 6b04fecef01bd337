"""Reads tensors out of a PyTorch / TorchScript zip archive without torch.

A `torch.save` or `torch.jit.save` file is a zip archive holding a pickle
(`<prefix>/data.pkl`) that describes the object tree, plus one raw,
little-endian storage per tensor (`<prefix>/data/<key>`). This module parses
that pickle with a restricted `pickle.Unpickler`: `find_class` admits only the
handful of globals such files need, each mapped to a local stand-in, and
refuses everything else (e.g. `os.system`) with `UnsafePickleError`. No code
from the file is ever executed and torch is never imported.

Admitted globals:
  * `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` -> numpy array view
    of the storage (copied, contiguous).
  * `torch.<Type>Storage` (Float, Double, Half, Long, Int, Short, Char, Byte,
    Bool) -> a dtype marker resolved by `persistent_load`.
  * `collections.OrderedDict`.
  * `torch.jit._pickle.build_{int,float,bool}list` -> `list`.
  * `__torch__.*` (TorchScript module classes) -> `TorchScriptObject`, a
    plain attribute record.

Public API:
  read_archive(path) -> (tensors, attributes): both flat dicts keyed by dotted
    attribute paths ("net.layers.conv.weight").
"""
import collections
import os
import pickle
import zipfile
from typing import Any

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class WeightsFileError(ValueError):
  """A weights file is missing, truncated, or not the expected archive."""


class UnsafePickleError(WeightsFileError):
  """The pickle references a global outside the allow-list."""


class _StorageType:
  """Marker for `torch.<X>Storage` globals; carries the numpy dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


class TorchScriptObject:
  """Stand-in for a pickled `__torch__.*` object: a plain attribute record."""

  qualified_name = "__torch__.<unknown>"

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise pickle.UnpicklingError(
          f"unexpected state {type(state).__name__} for {self.qualified_name}")
    self.__dict__["attrs"] = dict(state)

  @property
  def attributes(self) -> dict:
    return self.__dict__.get("attrs", {})


_SCRIPT_CLASSES: dict = {}


def _script_class(module: str, name: str) -> type:
  key = f"{module}.{name}"
  if key not in _SCRIPT_CLASSES:
    _SCRIPT_CLASSES[key] = type(
        "TorchScriptObject", (TorchScriptObject,), {"qualified_name": key})
  return _SCRIPT_CLASSES[key]


def _rebuild_tensor_v2(storage, storage_offset, size, stride,
                       requires_grad=False, backward_hooks=None,
                       metadata=None):
  """Stand-in for torch._utils._rebuild_tensor_v2: a strided numpy copy."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, np.ndarray):
    raise pickle.UnpicklingError("tensor without a storage")
  size = tuple(int(s) for s in size)
  stride = tuple(int(s) for s in stride)
  if len(size) != len(stride) or any(s < 0 for s in size + stride):
    raise pickle.UnpicklingError(f"bad tensor geometry {size} / {stride}")
  offset = int(storage_offset)
  if any(s == 0 for s in size):
    return np.zeros(size, storage.dtype)
  if int(np.prod(size, dtype=object)) > storage.size:
    # Only overlapping (e.g. zero-stride, expanded) views have more elements
    # than their storage; a file can make them huge from a few bytes.
    raise pickle.UnpicklingError(
        f"tensor of shape {size} has more elements than its storage of "
        f"{storage.size}")
  last = offset + sum((n - 1) * st for n, st in zip(size, stride))
  if offset < 0 or last >= storage.size:
    raise pickle.UnpicklingError(
        f"tensor of shape {size} reads past its storage of {storage.size} "
        "elements (truncated file?)")
  item = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=size, strides=tuple(st * item for st in stride),
      writeable=False)
  return np.ascontiguousarray(view).astype(storage.dtype.newbyteorder("="))


def _rebuild_tensor(storage, storage_offset, size, stride):
  return _rebuild_tensor_v2(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_floatlist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler admitting only the globals listed in the module docstring."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str,
               path: str):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._path = path
    self._storages: dict = {}

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module.startswith("__torch__.") or module == "__torch__":
      return _script_class(module, name)
    raise UnsafePickleError(
        f"{self._path}: refusing to load global '{module}.{name}' from the "
        "pickle (only tensors and TorchScript module records are allowed)")

  def persistent_load(self, pid):
    if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
    _, storage_type, key, _, numel = pid
    key = str(key)
    if key not in self._storages:
      entry = f"{self._prefix}data/{key}"
      try:
        raw = self._archive.read(entry)
      except KeyError as e:
        raise pickle.UnpicklingError(f"missing storage entry {entry}") from e
      dtype = storage_type.dtype
      if len(raw) < int(numel) * dtype.itemsize:
        raise pickle.UnpicklingError(
            f"storage {entry} has {len(raw)} bytes, expected "
            f"{int(numel) * dtype.itemsize}")
      self._storages[key] = np.frombuffer(raw, dtype=dtype, count=int(numel))
    return self._storages[key]


def _find_prefix(names) -> str:
  candidates = sorted(
      n[:-len("data.pkl")] for n in names
      if n.endswith("/data.pkl") and n.count("/") == 1)
  if "data.pkl" in names:
    candidates.insert(0, "")
  if not candidates:
    raise WeightsFileError("no data.pkl entry")
  return candidates[0]


def _flatten(obj, prefix: str, tensors: dict, attributes: dict):
  if isinstance(obj, TorchScriptObject):
    items = obj.attributes.items()
  elif isinstance(obj, dict):
    items = obj.items()
  else:
    items = None
  if items is not None:
    for k, v in items:
      _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors, attributes)
  elif isinstance(obj, np.ndarray):
    tensors[prefix] = obj
  else:
    attributes[prefix] = obj


def read_archive(path: str | os.PathLike) -> tuple[dict, dict]:
  """Reads a torch/TorchScript zip archive into flat numpy dicts.

  Args:
    path: the `.pt` file.

  Returns:
    (tensors, attributes): `tensors` maps dotted attribute paths to numpy
    arrays (torch layout, e.g. OIHW conv kernels); `attributes` maps dotted
    paths to the other leaf values (ints, lists, bools, None).

  Raises:
    WeightsFileError: the file is missing, truncated, not a zip archive, or
      its pickle is malformed; the message is one line naming the file.
    UnsafePickleError: the pickle references a global not on the allow-list.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsFileError(f"{path}: weights file not found")
  try:
    with zipfile.ZipFile(path) as archive:
      prefix = _find_prefix(archive.namelist())
      with archive.open(prefix + "data.pkl") as f:
        root = _RestrictedUnpickler(f, archive, prefix, path).load()
  except UnsafePickleError:
    raise
  except WeightsFileError as e:
    raise WeightsFileError(
        f"{path}: not a PyTorch/TorchScript archive ({e})") from None
  except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError,
          pickle.UnpicklingError, ValueError, TypeError, AttributeError,
          IndexError, KeyError, NotImplementedError, MemoryError,
          RecursionError) as e:
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise WeightsFileError(
        f"{path}: cannot read as a PyTorch/TorchScript zip archive "
        f"(truncated or foreign file?): {detail}") from None
  tensors: dict[str, np.ndarray] = {}
  attributes: dict[str, Any] = {}
  _flatten(root, "", tensors, attributes)
  return tensors, attributes
