"""Evaluating a run: reconstruction (stage 1) and generation (stage 2) metrics.

    report = evaluate_lib.evaluate(None, "runs/fashion_mnist")
    print(evaluate_lib.format_report(report))

The library behind `python -m maskgit_jax.evaluate`; training calls
`evaluate_after_stage` when `config.evaluation.enabled`.

Models. By default the newest readable checkpoint of each stage in WORKDIR
(EMA params when saved; `checkpoint_lib.restore_params_with_info` reads checkpoints written
on any device topology), with the config of WORKDIR/config.json unless one is
given. Or released-format msgpack files: `tokenizer_checkpoint`,
`transformer_checkpoint` (e.g. the released ImageNet files), a folder written
by `python -m maskgit_jax.export` as WORKDIR, `config.tokenizer_checkpoint`
for the tokenizer; or variables passed in. Every tree is checked against the
config's models.

Real images. Each split is read in a fixed random order (a permutation of
the split seeded with SUBSET_SEED, evaluation preprocessing: centre crop, no
flip), so the first n images are a class-mixed random subset, even for
class-sorted image folders, and the same ones in every evaluation. Their
features (and labels) are cached with `metrics.reference` in CACHE_DIR
(default WORKDIR/eval_cache), keyed by data set (with a digest of the data
config), split, image size and feature network; an evaluation that needs
more images extends the cached prefix.

Stage 1 (tokenizer), on the first `num_real` eval images:
  psnr, ssim: means over the images, reconstructions clipped to [0, 1]
    (ssim is None for images smaller than its 11x11 window);
  rfid: FID of the reconstructions' features against the same real images';
  codebook usage (% of the codes used at least once) and perplexity.
Stage 2 (transformer): `num_samples` class-conditional samples (class c gets
  num_samples // C, one more for c < num_samples % C), decoded with the
  options of `config.sampling`:
  fid: against the first `num_real` eval images (the reference);
  precision, recall, density, coverage (k = 3) against the reference;
  class fidelity: a k-NN classifier (k = 5) fitted on `num_train` real
    *train* images; its accuracy per conditioned class on the samples,
    beside its accuracy on the real reference images.

The real-vs-real floor beside every FID: the FID of N *held-out* real eval
images (disjoint from the reference; N = the size of the set being judged)
against the same reference. It is what real data scores in exactly the same
comparison (FID is biased upwards at finite N); with num_samples ==
num_real it is the FID of two disjoint real subsets of N images. It needs
num_real + N eval images: the first num_real + max(N) of the fixed order
are featurised. When the split is smaller, the floor is None and
`*_floor_note` says why.
"""

import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import time
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from maskgit_jax import data as data_lib
from maskgit_jax import models
from maskgit_jax import official
from maskgit_jax import sample_lib
from maskgit_jax.data import config as data_config_lib
from maskgit_jax.libml import sampling
from maskgit_jax.metrics import classifier
from maskgit_jax.metrics import codebook
from maskgit_jax.metrics import features as features_lib
from maskgit_jax.metrics import fid
from maskgit_jax.metrics import prdc
from maskgit_jax.metrics import quality
from maskgit_jax.metrics import reconstruction
from maskgit_jax.metrics import reference
from maskgit_jax.nets import inception
# train_lib.run may import this module (the training hook): use `run.` only
# inside functions, never at import time.
from maskgit_jax.train_lib import checkpoint as checkpoint_lib
from maskgit_jax.train_lib import run

REPORT_FORMAT = "maskgit_jax.evaluation/1"
STAGES = ("tokenizer", "transformer")
PR_K = prdc.DEFAULT_K
CLASSIFIER_K = classifier.DEFAULT_K
SUBSET_SEED = 0
SSIM_WINDOW = 11
DEFAULT_NUM_SAMPLES = 1000
DEFAULT_NUM_REAL = 1000
DEFAULT_BATCH_SIZE = 32
_CACHE_FORMAT = 1
# The `config.data` fields that decide which images a split holds.
_DATA_KEYS = ("source", "name", "path", "eval_path", "train_split",
              "eval_split", "max_examples", "image_key", "label_key",
              "tfds_decode", "pad", "image_size", "channels",
              "eval_crop_fraction", "resize_method")

FeatureFn = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------
# Config and models.


def checkpoint_steps(checkpoint_dir: str) -> List[int]:
  """Sorted steps of the orbax checkpoints in `checkpoint_dir` ([] if none)."""
  if not os.path.isdir(checkpoint_dir):
    return []
  with checkpoint_lib.read_only_manager(checkpoint_dir) as manager:
    return sorted(manager.all_steps())


def _tokenizer_roundtrip(module, images):
  return module.decode_from_indices(module.encode_to_indices(images))


@dataclasses.dataclass
class LoadedModels:
  """The models of a config and whichever variables were found.

  Attributes:
    tokenizer, transformer: the modules built from the config.
    tokenizer_variables, transformer_variables: `{"params": ...}` or None.
    sources: {stage: {"source": "workdir" | "file" | "given", "path",
      "step"}} for the stages that have variables.
  """
  tokenizer: Any
  transformer: Any
  tokenizer_variables: Optional[Dict[str, Any]] = None
  transformer_variables: Optional[Dict[str, Any]] = None
  sources: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)


def _restore_from_workdir(workdir: str, stage: str, expected
                          ) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
  """The newest readable checkpoint of `stage`, checked; (None, {}) if none."""
  checkpoint_dir = os.path.join(workdir, stage, "checkpoints")
  variables, info = checkpoint_lib.restore_params_with_info(checkpoint_dir)
  if variables is None:
    return None, {}
  official.check_tree(variables, expected,
                      f"{checkpoint_dir}/{info['step']}")
  return variables, {"source": "workdir", "path": checkpoint_dir, **info}


def _load_file(path: str, module, *example_args, **kwargs):
  variables = official.load_variables(path, module, *example_args, **kwargs)
  return variables, {"source": "file", "path": os.path.abspath(path),
                     "step": None}


def _given(variables, expected, stage: str):
  official.check_tree(variables, expected, f"the given {stage} variables")
  # Host copies: arrays sharded over a training mesh would pin the jitted
  # evaluation to that mesh.
  return jax.device_get(variables), {"source": "given", "path": None,
                                     "step": None}


def _exported(workdir: str, stage: str) -> Optional[str]:
  """WORKDIR/<stage>.msgpack when WORKDIR is an exported folder
  (`python -m maskgit_jax.export`), else None."""
  path = os.path.join(workdir, f"{stage}.msgpack")
  return path if os.path.isfile(path) else None


def load_models(config: ml_collections.ConfigDict, workdir: str, *,
                tokenizer_checkpoint: Optional[str] = None,
                transformer_checkpoint: Optional[str] = None,
                tokenizer_variables=None, transformer_variables=None,
                load_transformer: bool = True) -> LoadedModels:
  """Builds the config's models and finds their variables.

  Order of precedence per stage: variables passed in, an explicit released-
  format file, WORKDIR/<stage>.msgpack (a folder written by
  `python -m maskgit_jax.export`), (tokenizer only)
  `config.tokenizer_checkpoint`, the newest checkpoint in
  WORKDIR/<stage>/checkpoints.

  Args:
    config: the run's config.
    workdir: the run folder.
    tokenizer_checkpoint, transformer_checkpoint: released-format files.
    tokenizer_variables, transformer_variables: `{"params": ...}` trees.
    load_transformer: False skips the transformer (stage 1 only).

  Returns:
    LoadedModels; a stage without variables has None.

  Raises:
    ValueError, FileNotFoundError: a bad file or a tree that does not fit
      the config's model (one line, naming it).
  """
  tokenizer = models.tokenizer_from_config(config)
  transformer = models.transformer_from_config(config)
  out = LoadedModels(tokenizer, transformer)
  images = np.zeros((1, config.image_size, config.image_size,
                     tokenizer.channels), np.float32)
  tokenizer_file = (tokenizer_checkpoint or _exported(workdir, "tokenizer")
                    or config.get("tokenizer_checkpoint", "") or None)
  if tokenizer_variables is not None:
    expected = official.model_shapes(tokenizer, images,
                                     method=_tokenizer_roundtrip)
    found = _given(tokenizer_variables, expected, "tokenizer")
  elif tokenizer_file:
    found = _load_file(tokenizer_file, tokenizer, images,
                       method=_tokenizer_roundtrip)
  else:
    expected = official.model_shapes(tokenizer, images,
                                     method=_tokenizer_roundtrip)
    found = _restore_from_workdir(workdir, "tokenizer", expected)
  out.tokenizer_variables, info = found
  if info:
    out.sources["tokenizer"] = info
  if not load_transformer:
    return out
  ids = np.zeros((1, transformer.max_position_embeddings), np.int32)
  if transformer_variables is not None:
    found = _given(transformer_variables,
                   official.model_shapes(transformer, ids), "transformer")
  elif transformer_checkpoint or _exported(workdir, "transformer"):
    found = _load_file(
        transformer_checkpoint or _exported(workdir, "transformer"),
        transformer, ids)
  else:
    found = _restore_from_workdir(workdir, "transformer",
                                  official.model_shapes(transformer, ids))
  out.transformer_variables, info = found
  if info:
    out.sources["transformer"] = info
  return out


def _select_stages(stages: Optional[Sequence[str]], loaded: LoadedModels,
                   workdir: str) -> Tuple[str, ...]:
  """The stages to evaluate: those asked for, or those with variables."""
  available = tuple(s for s in STAGES if s in loaded.sources)
  if stages is None:
    stages = available
  stages = tuple(stages)
  for stage in stages:
    if stage not in STAGES:
      raise ValueError(f"unknown stage {stage!r}; expected some of {STAGES}")
    if stage not in available:
      raise ValueError(f"cannot evaluate the {stage}: no checkpoint in "
                       f"{os.path.join(workdir, stage, 'checkpoints')} and "
                       f"no --{stage}_checkpoint file given")
  if not stages:
    raise ValueError(f"nothing to evaluate: {workdir} has no tokenizer or "
                     "transformer checkpoint and no checkpoint file was given")
  if "transformer" in stages and loaded.tokenizer_variables is None:
    raise ValueError("the transformer needs a tokenizer to decode its "
                     "samples: no tokenizer checkpoint in the workdir, no "
                     "--tokenizer_checkpoint and no "
                     "config.tokenizer_checkpoint")
  return tuple(s for s in STAGES if s in stages)


# --------------------------------------------------------------------------
# Features.


def _tree_digest(tree) -> str:
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
                    batch_size: int = DEFAULT_BATCH_SIZE
                    ) -> Tuple[FeatureFn, Optional[str]]:
  """The image -> feature function and its name (the cache key).

  Args:
    feature_extractor: any callable `[N, H, W, C]` float images in [0, 1] ->
      `[N, D]` features; its `name` attribute (if any) keys the cache, and
      without one nothing is cached.
    inception_params: FID Inception-v3 params (e.g.
      `inception.random_params()` in tests); default: the real weights
      (`inception.load_params()`).
    batch_size: the Inception batch.

  Returns:
    (function, name or None).
  """
  if feature_extractor is not None:
    if inception_params is not None:
      raise ValueError("give feature_extractor or inception_params, not both")
    return feature_extractor, getattr(feature_extractor, "name", None)
  params = (inception_params if inception_params is not None
            else inception.load_params())
  extractor = features_lib.InceptionFeatureExtractor(batch_size, params=params)
  return extractor, f"inception_v3-{_tree_digest(params)[:12]}"


def _subset_order(num_examples: int) -> np.ndarray:
  """The fixed random order in which a split's records are read."""
  return np.random.default_rng(SUBSET_SEED).permutation(num_examples)


def _record_batches(dataset: data_lib.Dataset, order: np.ndarray, start: int,
                    num: int, batch_size: int
                    ) -> Iterator[Tuple[np.ndarray, np.ndarray, int]]:
  """Readable records `order[start:]` in batches until `num` images.

  Yields:
    (images float32 [b, H, W, C], labels int64 [b], next position in
    `order`), b <= batch_size; unreadable records are skipped (warned).
  """
  def load(index):
    try:
      image, label = dataset.source[int(index)]
      return dataset.preprocessor(image, None), int(label)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("skipping unreadable image %s (%s: %s)",
                      dataset.source.describe(int(index)), type(e).__name__,
                      str(e)[:200])
      return None

  threads = max(1, data_config_lib.read_threads(dataset.config))
  position, seen = start, 0
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    while seen < num and position < len(order):
      chunk = order[position:position + min(batch_size, num - seen)]
      position += len(chunk)
      loaded = [r for r in pool.map(load, chunk) if r is not None]
      if not loaded:
        continue
      seen += len(loaded)
      yield (np.stack([r[0] for r in loaded]).astype(np.float32),
             np.asarray([r[1] for r in loaded], np.int64), position)


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
  order = _subset_order(dataset.num_examples)
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
    for images, batch_labels, position in _record_batches(
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


# --------------------------------------------------------------------------
# Metrics.


class _FidReference:
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


def _pad_to(batch: np.ndarray, size: int) -> np.ndarray:
  if batch.shape[0] == size:
    return batch
  pad = [(0, size - batch.shape[0])] + [(0, 0)] * (batch.ndim - 1)
  return np.pad(batch, pad)


def _reconstruction_step(tokenizer, with_ssim: bool):
  """jit: (variables, images) -> (ids, reconstructions, psnr, ssim)."""
  def step(variables, images):
    ids = tokenizer.apply(variables, images,
                          method=lambda m, x: m.encode_to_indices(x))
    recon = tokenizer.apply(variables, ids,
                            method=lambda m, i: m.decode_from_indices(i))
    recon = jnp.clip(recon, 0.0, 1.0)
    psnr = reconstruction.psnr(images, recon)
    ssim = (reconstruction.ssim(images, recon) if with_ssim
            else jnp.full_like(psnr, jnp.nan))
    return ids, recon, psnr, ssim
  return jax.jit(step)


def evaluate_tokenizer(loaded: LoadedModels, dataset: data_lib.Dataset,
                       ref: _FidReference, feature_fn: FeatureFn, *,
                       batch_size: int, progress: bool) -> Dict[str, Any]:
  """Stage-1 metrics on the reference images (see the module docstring)."""
  n = ref.num_reference
  size = dataset.image_shape[0]
  with_ssim = min(dataset.image_shape[:2]) >= SSIM_WINDOW
  step = _reconstruction_step(loaded.tokenizer, with_ssim)
  k = loaded.tokenizer.codebook_size
  counts = np.zeros(k, np.int64)
  psnrs, ssims, feats = [], [], []
  bar = tqdm.tqdm(total=n, desc="reconstructions", unit="img",
                  disable=not progress)
  for images, _, _ in _record_batches(dataset, _subset_order(
      dataset.num_examples), 0, n, batch_size):
    b = images.shape[0]
    ids, recon, psnr, ssim = jax.device_get(step(
        loaded.tokenizer_variables, _pad_to(images, batch_size)))
    counts += codebook.code_histogram(np.asarray(ids[:b]), k)
    psnrs.append(np.asarray(psnr[:b], np.float64))
    ssims.append(np.asarray(ssim[:b], np.float64))
    feats.append(np.asarray(feature_fn(np.asarray(recon[:b])), np.float32))
    bar.update(b)
  bar.close()
  feats = np.concatenate(feats)
  if feats.shape[0] != n:
    raise ValueError(f"read {feats.shape[0]} eval images for the "
                     f"reconstructions but the reference has {n}")
  floor, floor_note = ref.floor(n)
  usage = codebook.usage_from_histogram(counts)
  return {
      "num_images": int(n),
      "image_size": int(size),
      "psnr": float(np.mean(np.concatenate(psnrs))),
      "ssim": float(np.mean(np.concatenate(ssims))) if with_ssim else None,
      "rfid": ref.fid(feats, "rFID"),
      "rfid_floor": floor,
      "rfid_floor_images": int(n),
      "rfid_floor_note": floor_note,
      "codebook_size": int(k),
      "codebook_used": int(np.count_nonzero(counts)),
      "codebook_usage_percent": 100.0 * usage,
      "codebook_perplexity": codebook.perplexity_from_histogram(counts),
  }


def balanced_labels(num_samples: int, num_classes: int) -> np.ndarray:
  """`[num_samples]` class ids, spread evenly (the first classes get the
  remainder), grouped by class."""
  per_class = [num_samples // num_classes + (c < num_samples % num_classes)
               for c in range(num_classes)]
  return np.repeat(np.arange(num_classes), per_class)


def generate_features(sampler: sampling.MaskGitSampler, labels: np.ndarray,
                      rng: jax.Array, feature_fn: FeatureFn, *,
                      batch_size: int, progress: bool,
                      **decode_options) -> np.ndarray:
  """Features `[len(labels), D]` of one sample per label.

  Batches are padded to `batch_size` (one compiled shape); batch i uses
  `fold_in(rng, i)`. Images are not kept (memory stays bounded).
  """
  feats = []
  bar = tqdm.tqdm(total=len(labels), desc="samples", unit="img",
                  disable=not progress)
  for i, start in enumerate(range(0, len(labels), batch_size)):
    chunk = [int(c) for c in labels[start:start + batch_size]]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    tokens = sampler.generate_tokens(padded, jax.random.fold_in(rng, i),
                                     **decode_options)
    images = sampler.detokenize(tokens)[:len(chunk)]  # one compiled shape
    feats.append(np.asarray(feature_fn(images), np.float32))
    bar.update(len(chunk))
  bar.close()
  return np.concatenate(feats)


def evaluate_transformer(config: ml_collections.ConfigDict,
                         loaded: LoadedModels, ref: _FidReference,
                         train: RealSet, feature_fn: FeatureFn, *,
                         num_samples: int, class_names: Sequence[str],
                         batch_size: int, seed: int,
                         progress: bool) -> Dict[str, Any]:
  """Stage-2 metrics (see the module docstring)."""
  sampler = sampling.MaskGitSampler(
      loaded.tokenizer, loaded.tokenizer_variables, loaded.transformer,
      loaded.transformer_variables, num_classes=config.num_classes)
  labels = balanced_labels(num_samples, config.num_classes)
  options = sample_lib.decode_options(config)
  feats = generate_features(sampler, labels, jax.random.PRNGKey(seed),
                            feature_fn, batch_size=batch_size,
                            progress=progress, **options)
  floor, floor_note = ref.floor(num_samples)
  real = ref.real.features[:ref.num_reference]
  out = {
      "num_samples": int(num_samples),
      "samples_per_class_min": int(np.bincount(
          labels, minlength=config.num_classes).min()),
      "samples_per_class_max": int(np.bincount(labels).max()),
      "decode_options": options,
      "fid": ref.fid(feats, "FID"),
      "fid_reference_images": int(ref.num_reference),
      "fid_floor": floor,
      "fid_floor_images": int(num_samples),
      "fid_floor_note": floor_note,
      "precision_recall_k": PR_K,
  }
  out.update(prdc.prdc(real, feats, k=PR_K))
  out["class_fidelity"] = _class_fidelity(
      train, feats, labels, ref.real.features[:ref.num_reference],
      ref.real.labels[:ref.num_reference], config.num_classes, class_names)
  return out


def _class_fidelity(train: RealSet, gen_feats, gen_labels, real_feats,
                    real_labels, num_classes: int,
                    class_names: Sequence[str]) -> Dict[str, Any]:
  """k-NN class fidelity, per class: generated beside real eval accuracy."""
  result = classifier.class_fidelity(
      train.features, train.labels, gen_feats, gen_labels,
      test_features=real_feats, test_labels=real_labels, k=CLASSIFIER_K)
  counts = np.bincount(gen_labels, minlength=num_classes)
  real_counts = np.bincount(real_labels, minlength=num_classes)
  per_class = {}
  for c in range(num_classes):
    per_class[str(c)] = {
        "name": class_names[c] if c < len(class_names) else str(c),
        "generated": result.generated_per_class.get(c),
        "num_generated": int(counts[c]),
        "real_eval": result.real_test_per_class.get(c),
        "num_real_eval": int(real_counts[c]),
    }
  return {
      "k": CLASSIFIER_K,
      "classifier_train_images": int(train.features.shape[0]),
      "generated_accuracy": result.generated_accuracy,
      "real_eval_accuracy": result.real_test_accuracy,
      "per_class": per_class,
  }


# --------------------------------------------------------------------------
# The evaluation.


def _workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json, as training (or the export CLI) writes it."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"no config given and {path} does not exist; pass "
                     "--config=FILE")
  return sample_lib.config_from_json(path)


def _check_sizes(num_samples: int, num_real: int, num_train: int,
                 batch_size: int):
  minimum = PR_K + 1
  for name, value in (("num_samples", num_samples), ("num_real", num_real)):
    if value < minimum:
      raise ValueError(f"{name}={value}: need at least {minimum} images "
                       f"(precision/recall use k={PR_K})")
  if num_train < CLASSIFIER_K:
    raise ValueError(f"num_train={num_train}: the k-NN classifier needs at "
                     f"least k={CLASSIFIER_K} images")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")


def _jsonable(value):
  """Numpy scalars -> Python, non-finite floats -> None, recursively."""
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if np.isfinite(value) else None
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  return value


def default_report_path(workdir: str, name: Optional[str] = None) -> str:
  """WORKDIR/eval_<name>.json; name defaults to the UTC time."""
  if name is None:
    name = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y%m%d-%H%M%S")
  return os.path.join(workdir, f"eval_{name}.json")


def write_report(report: Dict[str, Any], path: str) -> str:
  """Writes the JSON atomically: an existing file is replaced only whole."""
  text = json.dumps(_jsonable(report), indent=1, allow_nan=False)

  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text + "\n")
  return sample_lib.atomic_write(path, write)


def _data_summary(dataset, train_dataset, class_names) -> Dict[str, Any]:
  cfg = dataset.config
  out = {"source": cfg.source, "name": cfg.name,
         "image_size": int(dataset.image_shape[0]),
         "channels": int(dataset.image_shape[2]),
         "eval_examples": int(dataset.num_examples),
         "num_classes": int(dataset.num_classes),
         "class_names": list(class_names)}
  if train_dataset is not None:
    out["train_examples"] = int(train_dataset.num_examples)
  return out


def evaluate(config: Optional[ml_collections.ConfigDict], workdir: str, *,
             tokenizer_checkpoint: Optional[str] = None,
             transformer_checkpoint: Optional[str] = None,
             tokenizer_variables=None, transformer_variables=None,
             stages: Optional[Sequence[str]] = None,
             num_samples: int = DEFAULT_NUM_SAMPLES,
             num_real: int = DEFAULT_NUM_REAL,
             num_train: Optional[int] = None,
             batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
             cache_dir: Optional[str] = None, output: Optional[str] = None,
             feature_extractor=None, inception_params=None,
             progress: bool = True) -> Dict[str, Any]:
  """Evaluates a run's stages and writes the JSON report.

  Every input is checked (config, models, data, class counts) before any
  work; the report is written atomically at the end, so a failure leaves any
  existing report untouched.

  Args:
    config: the run's config; None reads WORKDIR/config.json.
    workdir: the run folder (must exist); the report and the feature cache
      go here.
    tokenizer_checkpoint, transformer_checkpoint: released-format files
      used instead of the workdir's checkpoints.
    tokenizer_variables, transformer_variables: `{"params": ...}` used
      instead of any file (the training hook).
    stages: the stages to evaluate; None: each stage that has variables.
    num_samples: generated images (stage 2).
    num_real: real eval images: the FID reference and the stage-1 images.
    num_train: real train images of the k-NN classifier (default num_real).
    batch_size: images per batch (tokenizer, sampler and Inception).
    seed: sampling seed.
    cache_dir: real-feature cache (default WORKDIR/eval_cache).
    output: the report path (default WORKDIR/eval_<UTC time>.json).
    feature_extractor, inception_params: see `make_feature_fn`.
    progress: tqdm bars.

  Returns:
    The report (a JSON-compatible dict; its "path" is where it was written).

  Raises:
    ValueError, FileNotFoundError: bad input, with a one-line message.
  """
  t_start = time.perf_counter()
  num_train = num_real if num_train is None else num_train
  _check_sizes(num_samples, num_real, num_train, batch_size)
  if not os.path.isdir(workdir):
    raise ValueError(f"workdir {workdir} does not exist")
  if output is not None and os.path.isdir(output):
    raise ValueError(f"--output={output} is a folder; give a .json path")
  if config is None:
    config = _workdir_config(workdir)
  targets = quality.check_targets(config.get("quality_targets"))
  want_transformer = stages is None or "transformer" in stages
  loaded = load_models(
      config, workdir, tokenizer_checkpoint=tokenizer_checkpoint,
      transformer_checkpoint=transformer_checkpoint,
      tokenizer_variables=tokenizer_variables,
      transformer_variables=transformer_variables,
      load_transformer=want_transformer)
  stages = _select_stages(stages, loaded, workdir)
  dcfg = run.data_config(config, loaded.tokenizer.channels)
  index_dir = os.path.join(workdir, "data_index")
  eval_ds = data_lib.create_dataset(dcfg, "eval", batch_size,
                                    cache_dir=index_dir)
  train_ds = None
  class_names = tuple(config.get("class_names", ()) or eval_ds.class_names)
  if "transformer" in stages:
    if eval_ds.num_classes != config.num_classes:
      raise ValueError(f"config.num_classes={config.num_classes} but the "
                       f"eval data has {eval_ds.num_classes} classes")
    train_ds = data_lib.create_dataset(dcfg, "train", batch_size,
                                       cache_dir=index_dir)
    if train_ds.num_classes != config.num_classes:
      raise ValueError(f"config.num_classes={config.num_classes} but the "
                       f"train data has {train_ds.num_classes} classes")
  feature_fn, feature_name = make_feature_fn(feature_extractor,
                                             inception_params, batch_size)
  cache_dir = cache_dir or os.path.join(workdir, "eval_cache")
  timings = {"load_s": time.perf_counter() - t_start}
  notes: List[str] = []

  # Real features: the reference plus held-out images for the floors.
  held_out = max([num_real] * ("tokenizer" in stages) +
                 [num_samples] * ("transformer" in stages))
  t = time.perf_counter()
  real = real_features(eval_ds, "eval", num_real + held_out, feature_fn,
                       feature_name=feature_name, cache_dir=cache_dir,
                       batch_size=batch_size, progress=progress)
  num_reference = min(num_real, real.features.shape[0])
  if num_reference < num_real:
    notes.append(f"num_real={num_real} but the eval split has only "
                 f"{num_reference} readable images: the reference (and "
                 f"stage 1) use {num_reference}")
  if num_reference < PR_K + 1:
    raise ValueError(f"the eval split has only {num_reference} readable "
                     f"images; at least {PR_K + 1} are needed")
  ref = _FidReference(real, num_reference, notes)
  train = None
  if train_ds is not None:
    train = real_features(train_ds, "train", num_train, feature_fn,
                          feature_name=feature_name, cache_dir=cache_dir,
                          batch_size=batch_size, progress=progress)
    if train.features.shape[0] < num_train:
      notes.append(f"num_train={num_train} but the train split has only "
                   f"{train.features.shape[0]} readable images")
  timings["real_features_s"] = time.perf_counter() - t

  report = {
      "format": REPORT_FORMAT,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "workdir": os.path.abspath(workdir),
      "stages": list(stages),
      "models": loaded.sources,
      "data": _data_summary(eval_ds, train_ds, class_names),
      "settings": {
          "num_samples": num_samples, "num_real": num_real,
          "num_train": num_train, "batch_size": batch_size, "seed": seed,
          "feature_net": feature_name or type(feature_fn).__name__,
          "subset_seed": SUBSET_SEED,
          "cache_dir": os.path.abspath(cache_dir) if feature_name else None},
      "tokenizer": None,
      "transformer": None,
  }
  if "tokenizer" in stages:
    t = time.perf_counter()
    report["tokenizer"] = evaluate_tokenizer(
        loaded, eval_ds, ref, feature_fn, batch_size=batch_size,
        progress=progress)
    if report["tokenizer"]["ssim"] is None:
      notes.append(f"SSIM needs images of at least {SSIM_WINDOW}x"
                   f"{SSIM_WINDOW} pixels")
    timings["tokenizer_s"] = time.perf_counter() - t
  if "transformer" in stages:
    t = time.perf_counter()
    report["transformer"] = evaluate_transformer(
        config, loaded, ref, train, feature_fn, num_samples=num_samples,
        class_names=class_names, batch_size=batch_size, seed=seed,
        progress=progress)
    timings["transformer_s"] = time.perf_counter() - t
  timings["total_s"] = time.perf_counter() - t_start
  report["quality"] = {"targets": targets, "rows": [
      dict(zip(("measure", "measured", "reference", "ratio", "target", "met"),
               row)) for row in quality.summary(report, targets)]}
  report["notes"] = notes
  report["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
  path = output or default_report_path(workdir)
  report["path"] = os.path.abspath(path)
  report = _jsonable(report)
  write_report(report, path)
  return report


# --------------------------------------------------------------------------
# Training hook.


def evaluation_settings(config: ml_collections.ConfigDict
                        ) -> Optional[ml_collections.ConfigDict]:
  """`config.evaluation` when it is enabled, else None."""
  section = config.get("evaluation")
  if section is None or not section.get("enabled", False):
    return None
  return section


def evaluate_after_stage(config: ml_collections.ConfigDict, workdir: str,
                         stage: str, *, tokenizer_variables=None,
                         transformer_variables=None,
                         step: Optional[int] = None,
                         feature_extractor=None, inception_params=None,
                         log: Callable[[str], Any] = print
                         ) -> Optional[Dict[str, Any]]:
  """Evaluates `stage` after training it, when `config.evaluation.enabled`.

  Writes WORKDIR/eval_<stage>_<step>.json and logs the table. A report that
  already exists is returned as is (a resumed run does not evaluate the same
  step again). Only process 0 evaluates.

  `config.evaluation` keys: enabled (bool), num_samples, num_real,
  num_train (0: num_real), batch_size, seed, cache_dir ("" : WORKDIR/
  eval_cache).

  Args:
    config: the training config.
    workdir: the run folder.
    stage: "tokenizer" (stage-1 metrics) or "transformer" (stage 2).
    tokenizer_variables, transformer_variables: the stage's trained
      variables (None: read from the workdir's checkpoints).
    step: the step in the report's name (default: the newest checkpoint).
    feature_extractor, inception_params: see `make_feature_fn`.
    log: where the table goes.

  Returns:
    The report, or None when evaluation is disabled or on other processes.
  """
  section = evaluation_settings(config)
  if section is None or jax.process_index() != 0:
    return None
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
  if step is None:
    steps = checkpoint_steps(os.path.join(workdir, stage, "checkpoints"))
    step = steps[-1] if steps else 0
  path = default_report_path(workdir, f"{stage}_{step}")
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  log(f"evaluating the {stage} at step {step}")
  report = evaluate(
      config, workdir, stages=(stage,),
      tokenizer_variables=tokenizer_variables,
      transformer_variables=(transformer_variables
                             if stage == "transformer" else None),
      num_samples=section.get("num_samples", DEFAULT_NUM_SAMPLES),
      num_real=section.get("num_real", DEFAULT_NUM_REAL),
      num_train=section.get("num_train", 0) or None,
      batch_size=section.get("batch_size", DEFAULT_BATCH_SIZE),
      seed=section.get("seed", 0),
      cache_dir=section.get("cache_dir", "") or None, output=path,
      feature_extractor=feature_extractor, inception_params=inception_params,
      progress=False)
  log(format_report(report))
  return report


# --------------------------------------------------------------------------
# The table.


def _num(value, fmt: str = ".4g") -> str:
  return "n/a" if value is None else format(value, fmt)


def _floor_text(value, images, note) -> str:
  if value is None:
    return f"(real-vs-real floor: n/a, {note})"
  return (f"(real-vs-real floor {_num(value)}: {images} held-out real "
          "images)")


def _model_text(info: Dict[str, Any]) -> str:
  if info.get("source") == "workdir":
    return f"step {info['step']}"
  if info.get("source") == "file":
    return info["path"]
  return info.get("source", "?")


def format_report(report: Dict[str, Any], max_classes: int = 20) -> str:
  """A readable table of a report."""
  lines = [f"Evaluation of {report['workdir']}"]
  for stage, info in report["models"].items():
    lines.append(f"  {stage}: {_model_text(info)}")
  s = report["settings"]
  lines.append(f"  features: {s['feature_net']}")
  tok = report.get("tokenizer")
  if tok:
    lines += [
        f"Stage 1, tokenizer ({tok['num_images']} eval images)",
        f"  PSNR                 {_num(tok['psnr'], '.2f')} dB",
        f"  SSIM                 {_num(tok['ssim'], '.4f')}",
        f"  rFID                 {_num(tok['rfid'])}  " + _floor_text(
            tok["rfid_floor"], tok["rfid_floor_images"],
            tok["rfid_floor_note"]),
        f"  codebook usage       {tok['codebook_usage_percent']:.1f} % "
        f"({tok['codebook_used']} of {tok['codebook_size']} codes)",
        f"  codebook perplexity  {_num(tok['codebook_perplexity'], '.1f')}",
    ]
  tr = report.get("transformer")
  if tr:
    cf = tr["class_fidelity"]
    lines += [
        f"Stage 2, transformer ({tr['num_samples']} samples, "
        f"{tr['samples_per_class_min']}-{tr['samples_per_class_max']} per "
        f"class, {tr['decode_options']['num_iter']} iterations)",
        f"  FID                  {_num(tr['fid'])}  " + _floor_text(
            tr["fid_floor"], tr["fid_floor_images"], tr["fid_floor_note"]),
        f"  precision / recall   {_num(tr['precision'], '.3f')} / "
        f"{_num(tr['recall'], '.3f')}  (k={tr['precision_recall_k']})",
        f"  density / coverage   {_num(tr['density'], '.3f')} / "
        f"{_num(tr['coverage'], '.3f')}",
        f"  class fidelity       {_num(cf['generated_accuracy'], '.3f')} "
        f"generated, {_num(cf['real_eval_accuracy'], '.3f')} real eval "
        f"(k-NN k={cf['k']}, {cf['classifier_train_images']} train images)",
    ]
    per_class = cf["per_class"]
    if len(per_class) <= max_classes:
      lines.append(f"    {'class':<24} {'generated':>10} {'real eval':>10}")
      for c, row in per_class.items():
        lines.append(f"    {(c + ' ' + row['name'])[:24]:<24} "
                     f"{_num(row['generated'], '.3f'):>10} "
                     f"{_num(row['real_eval'], '.3f'):>10}")
  rows = (report.get("quality") or {}).get("rows")
  if rows:
    lines.append("Ratios to the floors and to real accuracy, with the targets")
    lines += quality.format_rows([tuple(r.values()) for r in rows])
  for note in report.get("notes", []):
    lines.append(f"note: {note}")
  lines.append(f"({report['timings_s']['total_s']:.0f} s; report: "
               f"{report['path']})")
  return "\n".join(lines)
