"""Fingerprints of a checkpoint's arrays and data state.

Orbax's array files carry no checksum of the values: a flipped or zeroed byte
in an array data file restores silently wrong numbers. Each checkpoint
therefore also records a 32-bit fingerprint of every array of the state and
a CRC of the data iterator's state (in its JSON item), checked on restore.
The fingerprint is an integer sum, so it does not depend on the sharding or
the device count. It is computed on the devices, or, in a one-process run on
a CPU, by numpy on the host (the same integers: `fingerprints` picks the
route): the device program of a train state with hundreds of arrays takes
seconds to compile at each run's first save and first restore, the host
route milliseconds.
"""

import json
from typing import Any, Dict, Tuple
import zlib

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(0x9E3779B1)


def flat_shapes(tree: Any) -> Dict[str, Tuple[int, ...]]:
  """{"params/a/b": shape} of a tree's array leaves (arrays, abstract arrays
  or orbax metadata)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if hasattr(leaf, "shape"):
      out[path_name(path)] = tuple(int(d) for d in leaf.shape)
  return out


class ChecksumError(ValueError):
  """A checkpoint's arrays or data state differ from what was saved."""


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
  """uint32 sum of the array's 32-bit words, each times an odd weight that
  depends on its position: any single-bit change alters it."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    words = x.astype(jnp.uint32)
  else:
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[
        x.dtype.itemsize]
    words = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
  # Row-major positions from iotas (no reshape: sharded arrays stay put).
  position = jnp.zeros(words.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(words.ndim)):
    position += jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * (
        np.uint32(stride % 2**32))
    stride *= words.shape[axis]
  weights = position * _GOLDEN | np.uint32(1)
  return jnp.sum(words * weights, dtype=jnp.uint32)


_fingerprints = jax.jit(lambda leaves: [_leaf_fingerprint(x) for x in leaves])

# Elements per numpy chunk of the host route (bounds its temporary memory).
_CHUNK = 1 << 22


def _words(x: np.ndarray) -> np.ndarray:
  """The array's 32-bit words, as `_leaf_fingerprint` takes them: an 8-byte
  element is two words (low first, as `lax.bitcast_convert_type`), smaller
  ones one word each, zero-extended."""
  if x.dtype == np.bool_:
    return x.reshape(-1).astype(np.uint32)
  width = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[
      x.dtype.itemsize]
  return np.ascontiguousarray(x).reshape(-1).view(width)


def _host_fingerprint(x: np.ndarray) -> int:
  """`_leaf_fingerprint` of a host array, by numpy (uint32 arithmetic wraps
  as on the devices)."""
  words = _words(x)
  total = 0
  for start in range(0, words.size, _CHUNK):
    chunk = words[start:start + _CHUNK].astype(np.uint32)
    position = ((np.arange(chunk.size, dtype=np.uint64) + start)
                & 0xFFFFFFFF).astype(np.uint32)
    weights = position * _GOLDEN | np.uint32(1)
    total = (total + int(np.sum(chunk * weights, dtype=np.uint32))) & 0xFFFFFFFF
  return total


def _host_array(x: Any) -> np.ndarray:
  """The leaf as the device route sees it: key data for PRNG keys, numpy
  values in the dtype JAX would give them (int64 -> int32 without x64)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  x = np.asarray(x)
  return x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)


def _on_host(leaves) -> bool:
  """Whether the host route applies: one process, every array on a CPU."""
  if jax.process_count() > 1:
    return False
  for leaf in leaves:
    devices = getattr(leaf, "devices", None)
    if devices is not None and any(d.platform != "cpu" for d in devices()):
      return False
  return True


def path_name(path) -> str:
  """'params/encoder/0/kernel': the same for a TrainState and for the plain
  dicts and lists orbax restores it as without a target."""
  parts = []
  for key in path:
    for attr in ("name", "key", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def fingerprints(state: Any) -> Dict[str, int]:
  """{leaf path: uint32 fingerprint} of every array of `state` (a collective
  with several processes: every process calls it)."""
  paths, leaves = [], []
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
      paths.append(path_name(path))
      leaves.append(leaf)
  if not leaves:
    return {}
  if _on_host(leaves):
    values = [_host_fingerprint(_host_array(x)) for x in leaves]
  else:
    values = jax.device_get(_fingerprints(leaves))
  return dict(zip(paths, (int(v) for v in values)))


def data_crc(blob: Dict[str, Any]) -> int:
  data = {k: v for k, v in blob.items() if k in ("value", "bytes_b64")}
  return zlib.crc32(json.dumps(data, sort_keys=True).encode("utf-8"))


def verify_fingerprints(blob: Any, state: Any, where: str) -> None:
  """Raises ChecksumError when the fingerprints saved in `blob` differ."""
  if not isinstance(blob, dict) or "checksums" not in blob:
    return  # A checkpoint from before fingerprints.
  saved = blob["checksums"]
  if not isinstance(saved, dict) or blob.get("data_crc32") != data_crc(blob):
    raise ChecksumError(f"{where}: the data-iterator state or the saved "
                        "fingerprints are damaged")
  now = fingerprints(state)
  differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
  if differ:
    raise ChecksumError(
        f"{where}: {len(differ)} arrays differ from what was saved (first: "
        f"{differ[0]}); the array files are damaged")
