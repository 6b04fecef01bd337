"""Reader and writer of the idx format of (Fashion-)MNIST, gzipped or not.

An idx file is: two zero bytes, a type byte, a rank byte, `rank` big-endian
uint32 dimensions, then the row-major big-endian data. Gzip is detected from
the content (magic bytes 1f 8b), not from the file name.
"""
import gzip
import os
import zlib

import numpy as np

# Type byte -> big-endian numpy dtype.
_DTYPES = {
    0x08: np.dtype('>u1'),
    0x09: np.dtype('>i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}
_GZIP_MAGIC = b'\x1f\x8b'


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
  with open(path, 'rb') as f:
    data = f.read()
  if data[:2] == _GZIP_MAGIC:
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
      raise ValueError(f'{path}: corrupt gzip data ({e}).') from None
  return data


def decode(data: bytes, name: str = '<bytes>') -> np.ndarray:
  """Decodes the (uncompressed) bytes of an idx file.

  Args:
    data: the whole file content.
    name: a name for error messages.

  Returns:
    An array of shape `dims` in native byte order (uint8 for type 0x08).

  Raises:
    ValueError: bad magic, unknown type, or a size that does not match the
      header (truncated or trailing data).
  """
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f'{name}: not an idx file (bad magic number).')
  type_code, rank = data[2], data[3]
  if type_code not in _DTYPES:
    raise ValueError(f'{name}: unknown idx data type 0x{type_code:02x}.')
  header_size = 4 + 4 * rank
  if len(data) < header_size:
    raise ValueError(f'{name}: truncated idx header.')
  dims = tuple(
      int(d) for d in np.frombuffer(data, dtype='>u4', count=rank, offset=4))
  dtype = _DTYPES[type_code]
  expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
  actual = len(data) - header_size
  if actual != expected:
    raise ValueError(
        f'{name}: idx header {dims} needs {expected} data bytes, the file has '
        f'{actual} (truncated or corrupt file).')
  array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(dims)
  return array.astype(dtype.newbyteorder('='))


def read(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads an idx file (gzipped or not) into a numpy array of shape `dims`."""
  return decode(_read_bytes(path), name=os.fspath(path))


def encode(array: np.ndarray) -> bytes:
  """Encodes an array as idx bytes (the inverse of `decode`)."""
  array = np.asarray(array)
  for code, dtype in _DTYPES.items():
    if (array.dtype.kind, array.dtype.itemsize) == (dtype.kind,
                                                    dtype.itemsize):
      break
  else:
    raise ValueError(f'idx cannot store dtype {array.dtype}.')
  header = bytes([0, 0, code, array.ndim]) + np.asarray(
      array.shape, dtype='>u4').tobytes()
  return header + array.astype(dtype).tobytes()


def write(path: str | os.PathLike[str], array: np.ndarray,
          compress: bool | None = None) -> None:
  """Writes `array` as an idx file; gzipped if `compress` (default: the path
  ends with .gz)."""
  data = encode(array)
  if compress is None:
    compress = os.fspath(path).endswith('.gz')
  if compress:
    data = gzip.compress(data, compresslevel=1)
  with open(path, 'wb') as f:
    f.write(data)
