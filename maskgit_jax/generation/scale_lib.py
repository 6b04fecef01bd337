"""Samples at scale: N class-conditional images over every device of every
process, resumable, in the layout evaluation suites read.

    python -m maskgit_jax.sample --workdir=DIR --num_samples=50000 \
        --output=samples.npz

The labels (balanced over the classes, `sample_lib.balanced_labels`) are cut
by global index into shards of `shard_size`; process p samples the shards i
with i % process_count == p, each in batches of `batch_size`
(`sample_lib.label_batches` over the global indices) that are split
data-parallel over its local devices. Sample j decodes alone (a `vmap` over
the batch) with the key `fold_in(PRNGKey(seed), j)`, so its random draws
depend on the seed and j only, not on the batch, shard, process or device
counts; the images are bit-identical whenever the per-device batch
(`batch_size / local devices`) is the same (another per-device batch can move
a pixel by 1/255: float rounding in batched convolutions). Each shard is
written atomically to
`<output>.shards/shard_{i:05d}.npz`; a rerun skips the complete ones. After
a barrier, process 0 joins them in index order into the output, atomically:
an `.npz` (`arr_0` uint8 `[N, H, W, 3]`, grey repeated to 3 channels,
`labels` int `[N]`) or a folder of `{index:06d}_{class}.png`.
"""

import hashlib
import json
import os
import pathlib
import shutil
import uuid
import zipfile
from typing import Callable, List, NamedTuple, Optional, Sequence

import jax
import ml_collections
import numpy as np
from PIL import Image
import tqdm

from maskgit_jax.common import checks
from maskgit_jax.common import files
from maskgit_jax.common import grids
from maskgit_jax.common import multihost
from maskgit_jax.generation import sample_lib
from maskgit_jax.libml import sampling

SHARDS_SUFFIX = ".shards"
MARKER = ".maskgit_samples.json"  # in a PNG folder: the settings it holds
FORMAT = "maskgit_jax samples v1"


class Plan(NamedTuple):
  """What to sample: labels, cut into shards, and the run's settings.

  `meta` (JSON) is stored in every shard and in the output; a shard or an
  output with another `meta` belongs to another run and is never reused or
  overwritten.
  """
  output: str
  labels: np.ndarray
  seed: int
  shard_size: int
  batch_size: int
  meta: str

  @property
  def num_shards(self) -> int:
    return -(-len(self.labels) // self.shard_size)

  def shard_range(self, i: int):
    return i * self.shard_size, min((i + 1) * self.shard_size,
                                    len(self.labels))

  def shard_path(self, i: int) -> str:
    return os.path.join(shard_dir(self.output), f"shard_{i:05d}.npz")


def output_kind(output: str) -> str:
  """'npz' for `*.npz`, 'folder' for a name without an extension."""
  ext = os.path.splitext(output.rstrip("/"))[1].lower()
  if ext == ".npz":
    return "npz"
  if not ext:
    return "folder"
  raise ValueError(f"Cannot write {output} with --num_samples: give an .npz "
                   "file or a folder (a name without an extension).")


def shard_dir(output: str) -> str:
  return output.rstrip("/") + SHARDS_SUFFIX


def plan(output: str, num_samples: int, num_classes: int, *,
         classes: Optional[Sequence[int]] = None, seed: int = 0,
         batch_size: int = 64, shard_size: int = 1000,
         settings: Optional[dict] = None) -> Plan:
  """Checks the request (ValueError, one line) and returns the plan.

  `classes`: balance over these class ids (in this order) instead of all
  `num_classes`. `settings`: what else fixes the images (decoding options,
  the model), recorded in `meta`.
  """
  # An npz file, or a folder of PNGs (a file inside it must be makeable).
  files.check_output_location(output if output_kind(output) == "npz" else
                              os.path.join(output, "sample.png"))
  for name, value in (("num_samples", num_samples), ("batch_size", batch_size),
                      ("shard_size", shard_size)):
    checks.check_int(f"--{name}", value, low=1)
  if classes:
    sample_lib.check_class_ids(classes, num_classes)
    labels = np.asarray(classes, np.int64)[
        sample_lib.balanced_labels(num_samples, len(classes))]
  else:
    labels = sample_lib.balanced_labels(num_samples, num_classes)
  labels = labels.astype(np.int64)
  meta = json.dumps(dict(
      format=FORMAT, num_samples=int(num_samples), seed=int(seed),
      shard_size=int(shard_size),
      labels_sha256=hashlib.sha256(labels.tobytes()).hexdigest(),
      settings=settings or {}), sort_keys=True, default=str)
  return Plan(output, labels, int(seed), int(shard_size), int(batch_size),
              meta)


def _read_meta(path: str) -> Optional[str]:
  """The `meta` of an npz we wrote; None for anything else or unreadable."""
  try:
    with np.load(path, allow_pickle=False) as f:
      return str(f["meta"]) if "meta" in f.files else None
  except (OSError, ValueError, zipfile.BadZipFile, EOFError):
    return None


def output_done(p: Plan) -> bool:
  """True when the output exists and holds this plan's samples.

  Raises:
    ValueError: the output exists and is not this plan's (nothing is
      overwritten); or the shard folder holds another run's shards.
  """
  out = p.output.rstrip("/")
  done = False
  if output_kind(out) == "npz" and os.path.lexists(out):
    if not os.path.isfile(out) or _read_meta(out) != p.meta:
      raise ValueError(f"{out} exists and does not hold these samples (other "
                       "settings, or not written by this command); remove it "
                       "or choose another --output.")
    done = True
  elif output_kind(out) == "folder" and os.path.lexists(out):
    marker = os.path.join(out, MARKER)
    if os.path.isdir(out) and not os.listdir(out):
      pass  # An empty folder is replaced.
    elif not os.path.isdir(out) or not os.path.isfile(marker) or (
        pathlib.Path(marker).read_text() != p.meta):
      raise ValueError(f"{out} exists and does not hold these samples (other "
                       "settings, or not written by this command); remove it "
                       "or choose another --output.")
    else:
      done = True
  directory = shard_dir(out)
  if not done and os.path.isdir(directory):
    for name in sorted(os.listdir(directory)):
      path = os.path.join(directory, name)
      if name.startswith("shard_") and name.endswith(".npz"):
        meta = _read_meta(path)
        if meta is not None and meta != p.meta:
          raise ValueError(f"{directory} holds shards of a run with other "
                           "settings; remove it or choose another --output.")
  return done


def read_shard(p: Plan, i: int) -> Optional[np.ndarray]:
  """Shard i's images when its file holds exactly its indices and labels
  (of this plan), else None."""
  try:
    with np.load(p.shard_path(i), allow_pickle=False) as f:
      start, end = p.shard_range(i)
      if (str(f["meta"]) == p.meta and
          np.array_equal(f["indices"], np.arange(start, end)) and
          np.array_equal(f["labels"], p.labels[start:end])):
        images = f["images"]
        return images if images.shape[0] == end - start else None
  except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
    pass
  return None


def shard_complete(p: Plan, i: int) -> bool:
  return read_shard(p, i) is not None


def to_rgb_uint8(images) -> np.ndarray:
  """Float `[b, H, W, C]` in [0, 1] -> uint8 `[b, H, W, 3]`."""
  images = grids.to_uint8(images)
  if images.ndim == 3:  # grey, channel dropped by to_uint8
    images = images[..., None]
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images


def sharded_images_fn(sampler: sampling.MaskGitSampler,
                      devices: Sequence[jax.Device], labels: np.ndarray,
                      seed: int, **decode_options
                      ) -> Callable[[List[int], jax.Array], np.ndarray]:
  """`(indices, unused_key) -> uint8 [b, H, W, 3]`, data-parallel over
  `devices`: sample j has class `labels[j]` and key `fold_in(PRNGKey(seed),
  j)`.

  The variables are replicated over a 1-D mesh of `devices` and the batch
  split over it; the jitted decode (vmapped: each sample alone with its own
  key) and detokenize follow the inputs' sharding. b must be a multiple of
  len(devices).
  """
  mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
  spec = jax.sharding.PartitionSpec
  batch = jax.sharding.NamedSharding(mesh, spec("batch"))
  replicated = jax.sharding.NamedSharding(mesh, spec())
  local = sampling.MaskGitSampler(
      sampler.tokenizer, jax.device_put(sampler.tokenizer_variables,
                                        replicated),
      sampler.transformer, jax.device_put(sampler.transformer_variables,
                                          replicated),
      num_classes=sampler.num_classes)
  side = local.latent_size
  base = jax.random.PRNGKey(seed)
  keys_of = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))
  decode = jax.vmap(lambda x, key: local.decode_tokens(
      x[None], key, **decode_options)[0, -1, 1:])

  def images(indices, unused_key):
    del unused_key
    if len(indices) % len(devices):
      raise ValueError(f"--batch_size={len(indices)} must be a multiple of "
                       f"the {len(devices)} local devices.")
    indices = np.asarray(indices)
    inputs = jax.device_put(local.generation_inputs(labels[indices]), batch)
    keys = jax.device_put(keys_of(base, indices), batch)
    ids = decode(inputs, keys).reshape(-1, side, side)
    return to_rgb_uint8(local.detokenize(ids))
  return images


def sample_shards(p: Plan, fn, *, process_index: int = 0,
                  process_count: int = 1, progress: bool = False,
                  after_shard: Optional[Callable[[int], None]] = None
                  ) -> List[int]:
  """Samples and writes this process's missing shards; returns their ids.

  `fn(indices, key)`: uint8 images of a batch of global sample indices
  (`sharded_images_fn`; label_batches' batch key is not used).
  `after_shard(i)`: called after shard i is written (tests stop a run here).
  """
  mine = range(process_index, p.num_shards, process_count)
  todo = [i for i in mine if not shard_complete(p, i)]
  total = sum(p.shard_range(i)[1] - p.shard_range(i)[0] for i in todo)
  with tqdm.tqdm(total=total, unit="img", desc="samples",
                 disable=not progress) as bar:
    for i in todo:
      start, end = p.shard_range(i)
      parts = []
      for part in sample_lib.label_batches(
          fn, range(start, end), jax.random.PRNGKey(p.seed), p.batch_size,
          shrink=False):
        parts.append(part)
        bar.update(len(part))
      images = np.concatenate(parts)

      def write(tmp, images=images, start=start, end=end):
        with open(tmp, "wb") as f:
          np.savez(f, images=images, labels=p.labels[start:end],
                   indices=np.arange(start, end), meta=np.asarray(p.meta))
      files.atomic_write(p.shard_path(i), write)
      if after_shard is not None:
        after_shard(i)
  return todo


def _shards(p: Plan):
  """Each shard's (start, images, labels), checked, in index order."""
  for i in range(p.num_shards):
    images = read_shard(p, i)
    if images is None:
      raise ValueError(f"{p.shard_path(i)} is missing or incomplete; run the "
                       "same command again to finish it.")
    start, end = p.shard_range(i)
    yield start, images, p.labels[start:end]


def join(p: Plan, *, keep_shards: bool = False) -> str:
  """Joins the shards into the output (atomically), then removes them."""
  out = p.output.rstrip("/")
  if output_kind(out) == "npz":
    files.atomic_write(out, lambda tmp: _write_npz(tmp, p))
  else:
    _write_folder(out, p)
  if not keep_shards:
    shutil.rmtree(shard_dir(out), ignore_errors=True)
  return out


def _write_npz(path: str, p: Plan) -> None:
  """`arr_0`, `labels`, `meta` as `np.savez` lays them out, streamed one
  shard at a time (50,000 256px images are 9.8 GB)."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED,
                       allowZip64=True) as archive:
    shape = None
    with archive.open("arr_0.npy", "w", force_zip64=True) as f:
      for start, images, _ in _shards(p):
        if shape is None:
          shape = (len(p.labels),) + images.shape[1:]
          np.lib.format.write_array_header_1_0(f, {
              "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
              "fortran_order": False, "shape": shape})
        f.write(np.ascontiguousarray(images, np.uint8).tobytes())
    for name, value in (("labels", p.labels), ("meta", np.asarray(p.meta))):
      with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, value, allow_pickle=False)


def _write_folder(out: str, p: Plan) -> None:
  """PNGs `{index:06d}_{class}.png` in a temporary folder, renamed into
  place when complete."""
  parent = os.path.dirname(os.path.abspath(out))
  tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}")
  os.makedirs(tmp)
  try:
    for start, images, labels in _shards(p):
      for k, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(
            os.path.join(tmp, f"{start + k:06d}_{int(label)}.png"))
    with open(os.path.join(tmp, MARKER), "w") as f:
      f.write(p.meta)
    if os.path.isdir(out):
      os.rmdir(out)  # empty (checked by output_done)
    os.replace(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def write_samples(config: ml_collections.ConfigDict,
                  build_sampler: Callable[[], sampling.MaskGitSampler],
                  p: Plan, *, progress: bool = True, keep_shards: bool = False,
                  after_shard: Optional[Callable[[int], None]] = None,
                  **decode_overrides) -> Optional[str]:
  """Every process: its shards, a barrier, then process 0 joins.

  `build_sampler()` loads the models (after the output was checked). Returns
  the output on process 0 (None elsewhere); an output already complete is
  left as it is.
  """
  options = sample_lib.decode_options(config, **decode_overrides)
  if p.batch_size % jax.local_device_count():
    raise ValueError(f"--batch_size={p.batch_size} must be a multiple of the "
                     f"{jax.local_device_count()} local devices.")
  if output_done(p):
    return p.output if multihost.is_primary() else None
  fn = sharded_images_fn(build_sampler(), jax.local_devices(), p.labels,
                         p.seed, **options)
  sample_shards(p, fn, process_index=jax.process_index(),
                process_count=jax.process_count(),
                progress=progress and multihost.is_primary(),
                after_shard=after_shard)
  multihost.wait_for_all("maskgit_samples")
  if not multihost.is_primary():
    return None
  return join(p, keep_shards=keep_shards)
