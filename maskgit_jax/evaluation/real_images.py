"""Real images for evaluation: a fixed random subset, its features, a cache.

Each split is read in a fixed random order (a permutation of the split
seeded with SUBSET_SEED), through the training input pipeline
(`Dataset.ordered_batches`: the same loader and preprocessing, evaluation
style: centre crop, no flip), so the first n images are a class-mixed random
subset, even for class-sorted image folders, and the same ones in every
evaluation. Unreadable records are skipped (warned once).

Their features (and labels) are cached with `metrics.reference` in a cache
folder (default WORKDIR/eval_cache), keyed by data set (a digest of the data
config), split, image size and feature network; an evaluation that needs
more images extends the cached prefix.

`FidReference` holds the FID reference (the first `num_real` eval images)
and the real-vs-real floor: the FID of N *held-out* real eval images
(disjoint from the reference; N = the size of the set being judged) against
the same reference. It is what real data scores in exactly the same
comparison (FID is biased upwards at finite N).
"""

import dataclasses
import hashlib
import json
import logging
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import flax
import numpy as np
import tqdm

from maskgit_jax import data as data_lib
from maskgit_jax.metrics import features as features_lib
from maskgit_jax.metrics import fid
from maskgit_jax.metrics import reference
from maskgit_jax.nets import inception_weights

SUBSET_SEED = 0
DEFAULT_BATCH_SIZE = 32
_CACHE_FORMAT = 1

# The `config.data` fields that decide which images a split holds.
_DATA_KEYS = ("source", "name", "path", "eval_path", "train_split",
              "eval_split", "max_examples", "image_key", "label_key",
              "tfds_decode", "pad", "image_size", "channels",
              "eval_crop_fraction", "resize_method")

FeatureFn = Callable[[np.ndarray], np.ndarray]


def tree_digest(tree) -> str:
  """sha256 of a params tree's paths, shapes and values."""
  h = hashlib.sha256()
  flat = flax.traverse_util.flatten_dict(tree, sep="/")
  for key in sorted(flat):
    value = np.ascontiguousarray(np.asarray(flat[key], np.float32))
    h.update(key.encode())
    h.update(str(value.shape).encode())
    h.update(value.tobytes())
  return h.hexdigest()


def make_feature_fn(feature_extractor=None, inception_params=None,
                    batch_size: int = DEFAULT_BATCH_SIZE,
                    shard_batch: bool = False
                    ) -> Tuple[FeatureFn, Optional[str]]:
  """The image -> feature function and its name (the cache key).

  Args:
    feature_extractor: any callable `[N, H, W, C]` float images in [0, 1] ->
      `[N, D]` features; its `name` attribute (if any) keys the cache, and
      without one nothing is cached.
    inception_params: FID Inception-v3 params (e.g.
      `inception_weights.random_params()` in tests); default: the real weights
      (`inception_weights.load_params()`).
    batch_size: the Inception batch.
    shard_batch: split each Inception batch over the local devices.

  Returns:
    (function, name or None).
  """
  if feature_extractor is not None:
    if inception_params is not None:
      raise ValueError("give feature_extractor or inception_params, not both")
    return feature_extractor, getattr(feature_extractor, "name", None)
  params = (inception_params if inception_params is not None
            else inception_weights.load_params())
  extractor = features_lib.InceptionFeatureExtractor(
      batch_size, params=params, shard_batch=shard_batch)
  return extractor, f"inception_v3-{tree_digest(params)[:12]}"


def subset_order(num_examples: int) -> np.ndarray:
  """The fixed random order in which a split's records are read."""
  return np.random.default_rng(SUBSET_SEED).permutation(num_examples)


def record_batches(dataset: data_lib.Dataset, order: np.ndarray, start: int,
                   num: int, batch_size: int
                   ) -> Iterator[Tuple[np.ndarray, np.ndarray, int]]:
  """Readable records `order[start:]` in batches until `num` images, read
  through the input pipeline (`Dataset.ordered_batches`).

  Yields:
    (images float32 [b, H, W, C], labels int64 [b], next position in
    `order`), b <= batch_size; unreadable records are skipped (warned).
  """
  position, seen = start, 0
  if num <= 0 or start >= len(order):
    return
  for batch in dataset.ordered_batches(order[start:], batch_size):
    mask = np.asarray(batch["mask"], bool)
    count = np.cumsum(mask)
    used = len(mask)
    if seen + int(count[-1]) >= num:  # The last batch needed: cut it.
      used = int(np.searchsorted(count, num - seen)) + 1
    keep = mask[:used]
    position += used
    seen += int(keep.sum())
    if keep.any():
      yield (np.asarray(batch["image"][:used][keep], np.float32),
             np.asarray(batch["label"][:used][keep], np.int64), position)
    if seen >= num:
      return


def _data_fingerprint(dataset: data_lib.Dataset, split: str) -> Dict[str, Any]:
  cfg = dataset.config
  values = {k: cfg[k] for k in _DATA_KEYS}
  values.update(split=split, num_examples=dataset.num_examples,
                subset_seed=SUBSET_SEED, cache_format=_CACHE_FORMAT)
  return json.loads(json.dumps(values, sort_keys=True, default=str))


def _cache_path(cache_dir: str, dataset: data_lib.Dataset, split: str,
                fingerprint: Dict[str, Any], feature_name: str):
  cfg = dataset.config
  digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()
                          ).hexdigest()[:10]
  name = cfg.source + (f"-{cfg.name}" if cfg.name else "") + f"-{digest}"
  return reference.reference_cache_path(cache_dir, name, split,
                                        cfg.image_size,
                                        feature_net=feature_name)


def _load_cache(path, fingerprint):
  """(features, labels, next_position) of a matching cache file, or None."""
  if not path.is_file():
    return None
  try:
    stats = reference.ReferenceStats.load(path)
  except ValueError as e:
    logging.warning("ignoring the feature cache: %s", e)
    return None
  meta = stats.metadata
  labels = np.asarray(meta.get("labels", []), np.int64)
  if (meta.get("fingerprint") != fingerprint or stats.features is None
      or labels.shape != (stats.num_images,)):
    return None
  return stats.features, labels, int(meta["next_position"])


@dataclasses.dataclass(frozen=True)
class RealSet:
  """Features of real images of one split, in the fixed order.

  Attributes:
    features: `[n, D]` float32.
    labels: `[n]` int64.
    split_size: records in the split.
  """
  features: np.ndarray
  labels: np.ndarray
  split_size: int


def real_features(dataset: data_lib.Dataset, split: str, num: int,
                  feature_fn: FeatureFn, *, feature_name: Optional[str],
                  cache_dir: Optional[str], batch_size: int,
                  progress: bool) -> RealSet:
  """Features of the first `num` images of `split` in the fixed order.

  Cached (and extended when more are needed) under `cache_dir` when both it
  and `feature_name` are set. Fewer than `num` come back only when the split
  has fewer readable images.
  """
  fingerprint = _data_fingerprint(dataset, split)
  order = subset_order(dataset.num_examples)
  path = None
  feats = np.zeros((0, 0), np.float32)
  labels = np.zeros((0,), np.int64)
  position = 0
  if cache_dir and feature_name:
    path = _cache_path(cache_dir, dataset, split, fingerprint, feature_name)
    cached = _load_cache(path, fingerprint)
    if cached is not None:
      feats, labels, position = cached
  if feats.shape[0] < num and position < len(order):
    more = num - feats.shape[0]
    new_feats, new_labels = [], []
    bar = tqdm.tqdm(total=more, desc=f"real {split} features", unit="img",
                    disable=not progress)
    for images, batch_labels, position in record_batches(
        dataset, order, position, more, batch_size):
      new_feats.append(np.asarray(feature_fn(images), np.float32))
      new_labels.append(batch_labels)
      bar.update(len(images))
    bar.close()
    if new_feats:
      parts = [feats] if feats.shape[0] else []
      feats = np.concatenate(parts + new_feats)
      labels = np.concatenate([labels] + new_labels)
    if path is not None and feats.shape[0] >= 2:
      reference.ReferenceStats.from_features(feats, metadata=dict(
          fingerprint=fingerprint, labels=labels.tolist(),
          next_position=int(position))).save(path)
  return RealSet(feats[:num], labels[:num], dataset.num_examples)


class FidReference:
  """FIDs against the first `num_reference` real features, with floors."""

  def __init__(self, real: RealSet, num_reference: int, notes: List[str]):
    self.real = real
    self.num_reference = num_reference
    self.notes = notes
    self.mu, self.sigma = fid.compute_statistics(
        real.features[:num_reference])
    self._floors = {}

  def fid(self, feats, what: str) -> Optional[float]:
    """FID of `feats` against the reference; None (and a note) on failure."""
    try:
      mu, sigma = fid.compute_statistics(feats)
      return fid.frechet_distance(mu, sigma, self.mu, self.sigma)
    except ValueError as e:
      self.notes.append(f"{what}: FID failed ({e})")
      return None

  def floor(self, size: int) -> Tuple[Optional[float], Optional[str]]:
    """(FID of `size` held-out real images, None) or (None, why not)."""
    if size not in self._floors:
      held_out = self.real.features[self.num_reference:
                                    self.num_reference + size]
      if held_out.shape[0] < size:
        note = (f"the floor needs {self.num_reference + size} real eval "
                f"images ({self.num_reference} reference + {size} held "
                f"out); the eval split has only "
                f"{self.real.features.shape[0]} readable images")
        self._floors[size] = (None, note)
        self.notes.append(note)
      else:
        self._floors[size] = (self.fid(held_out, f"floor ({size} images)"),
                              None)
    return self._floors[size]


