"""`evaluate`: a run's stages, measured and reported (the library behind
`python -m maskgit_jax.evaluate`; the training loop's evaluators call it
too, see `evaluation.evaluators`).

    report = evaluate_lib.evaluate(None, "runs/fashion_mnist")
    print(report_lib.format_report(report))

Models come from `store.loader` (a workdir's newest checkpoints, EMA
preferred; an exported folder; released-format files; variables passed in),
with the config that trained them (WORKDIR/config.json) unless one is given.
Real images: `real_images` (a fixed random subset, read through the input
pipeline, features cached). Stage 1: `reconstruction`; stage 2:
`generation`; every FID is reported beside its real-vs-real floor at the
same N. The report: `report` (JSON, written atomically; paths in it are
relative to the workdir).
"""

import datetime
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections

from maskgit_jax import data as data_lib
from maskgit_jax.common import files
from maskgit_jax.evaluation import generation
from maskgit_jax.evaluation import real_images
from maskgit_jax.evaluation import reconstruction
from maskgit_jax.evaluation import report as report_lib
from maskgit_jax.metrics import quality
from maskgit_jax.store import loader

DEFAULT_NUM_SAMPLES = 1000
DEFAULT_NUM_REAL = 1000
DEFAULT_BATCH_SIZE = real_images.DEFAULT_BATCH_SIZE
format_report = report_lib.format_report


def _select_stages(stages: Optional[Sequence[str]], loaded: loader.LoadedModels,
                   workdir: str) -> Tuple[str, ...]:
  """The stages to evaluate: those asked for, or those with variables."""
  available = tuple(s for s in loader.STAGES if s in loaded.sources)
  if stages is None:
    stages = available
  stages = tuple(stages)
  for stage in stages:
    if stage not in loader.STAGES:
      raise ValueError(f"unknown stage {stage!r}; expected some of {loader.STAGES}")
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
  return tuple(s for s in loader.STAGES if s in stages)


def _check_sizes(num_samples: int, num_real: int, num_train: int,
                 batch_size: int):
  minimum = generation.PR_K + 1
  for name, value in (("num_samples", num_samples), ("num_real", num_real)):
    if value < minimum:
      raise ValueError(f"{name}={value}: need at least {minimum} images "
                       f"(precision/recall use k={generation.PR_K})")
  if num_train < generation.CLASSIFIER_K:
    raise ValueError(f"num_train={num_train}: the k-NN classifier needs at "
                     f"least k={generation.CLASSIFIER_K} images")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")



def evaluate(config: Optional[ml_collections.ConfigDict], workdir: str, *,
             tokenizer_checkpoint: Optional[str] = None,
             transformer_checkpoint: Optional[str] = None,
             tokenizer_variables=None, transformer_variables=None,
             stages: Optional[Sequence[str]] = None,
             steps: Optional[Dict[str, int]] = None,
             num_samples: int = DEFAULT_NUM_SAMPLES,
             num_real: int = DEFAULT_NUM_REAL,
             num_train: Optional[int] = None,
             batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
             sample_labels: str = "reference",
             cache_dir: Optional[str] = None, output: Optional[str] = None,
             feature_extractor=None, inception_params=None,
             progress: bool = True,
             extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
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
    steps: {stage: step}: that step's checkpoint of the workdir instead of
      the newest (`--tokenizer_step`, `--transformer_step`).
    num_samples: generated images (stage 2).
    num_real: real eval images: the FID reference and the stage-1 images.
    num_train: real train images of the k-NN classifier (default num_real).
    batch_size: images per batch (tokenizer, sampler and Inception).
    seed: sampling seed.
    sample_labels: the classes of the samples: "reference" (in the FID
      reference's class proportions) or "balanced" (evenly);
      `generation.SAMPLE_LABELS`.
    cache_dir: real-feature cache (default WORKDIR/eval_cache).
    output: the report path (default WORKDIR/eval_<UTC time>.json).
    feature_extractor, inception_params: see `make_feature_fn`.
    progress: tqdm bars.
    extra: more top-level keys for the report (the evaluators' key).

  Returns:
    The report (a JSON-compatible dict; its "path" is where it was written).

  Raises:
    ValueError, FileNotFoundError: bad input, with a one-line message.
  """
  t_start = time.perf_counter()
  num_train = num_real if num_train is None else num_train
  _check_sizes(num_samples, num_real, num_train, batch_size)
  generation.check_sample_labels(sample_labels)
  loader.check_workdir(workdir)
  report_lib.check_output(output)
  if config is None:
    config = loader.run_config(workdir)
  targets = quality.check_targets(config.get("quality_targets"))
  want_transformer = stages is None or "transformer" in stages
  loaded = loader.load_models(
      config, workdir, tokenizer_checkpoint=tokenizer_checkpoint,
      transformer_checkpoint=transformer_checkpoint,
      tokenizer_variables=tokenizer_variables,
      transformer_variables=transformer_variables,
      stages=loader.STAGES if want_transformer else ("tokenizer",),
      steps=steps)
  stages = _select_stages(stages, loaded, workdir)
  dcfg = data_lib.config.for_model(config, loaded.tokenizer.channels)
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
  feature_fn, feature_name = real_images.make_feature_fn(feature_extractor,
                                             inception_params, batch_size)
  cache_dir = cache_dir or os.path.join(workdir, "eval_cache")
  # Before the features it would hold are computed.
  files.check_output_location(os.path.join(cache_dir, "features.npz"))
  timings = {"load_s": time.perf_counter() - t_start}
  notes: List[str] = []

  # Real features: the reference plus held-out images for the floors.
  held_out = max([num_real] * ("tokenizer" in stages) +
                 [num_samples] * ("transformer" in stages))
  t = time.perf_counter()
  real = real_images.real_features(eval_ds, "eval", num_real + held_out, feature_fn,
                       feature_name=feature_name, cache_dir=cache_dir,
                       batch_size=batch_size, progress=progress)
  num_reference = min(num_real, real.features.shape[0])
  if num_reference < num_real:
    notes.append(f"num_real={num_real} but the eval split has only "
                 f"{num_reference} readable images: the reference (and "
                 f"stage 1) use {num_reference}")
  if num_reference < generation.PR_K + 1:
    raise ValueError(f"the eval split has only {num_reference} readable "
                     f"images; at least {generation.PR_K + 1} are needed")
  ref = real_images.FidReference(real, num_reference, notes)
  train = None
  if train_ds is not None:
    train = real_images.real_features(train_ds, "train", num_train, feature_fn,
                          feature_name=feature_name, cache_dir=cache_dir,
                          batch_size=batch_size, progress=progress)
    if train.features.shape[0] < num_train:
      notes.append(f"num_train={num_train} but the train split has only "
                   f"{train.features.shape[0]} readable images")
  timings["real_features_s"] = time.perf_counter() - t

  report = {
      "format": report_lib.REPORT_FORMAT,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "workdir": os.path.normpath(workdir),
      "stages": list(stages),
      "models": {stage: {**info, "path": report_lib.relative(
          info.get("path"), workdir)} for stage, info in
                 loaded.sources.items()},
      "data": report_lib.data_summary(eval_ds, train_ds, class_names),
      "settings": {
          "num_samples": num_samples, "num_real": num_real,
          "num_train": num_train, "batch_size": batch_size, "seed": seed,
          "sample_labels": sample_labels,
          "feature_net": feature_name or type(feature_fn).__name__,
          "subset_seed": real_images.SUBSET_SEED,
          "cache_dir": (report_lib.relative(cache_dir, workdir)
                        if feature_name else None)},
      "tokenizer": None,
      "transformer": None,
  }
  if "tokenizer" in stages:
    t = time.perf_counter()
    report["tokenizer"] = reconstruction.evaluate_tokenizer(
        loaded, eval_ds, ref, feature_fn, batch_size=batch_size,
        progress=progress)
    if report["tokenizer"]["ssim"] is None:
      notes.append(f"SSIM needs images of at least {reconstruction.SSIM_WINDOW}x"
                   f"{reconstruction.SSIM_WINDOW} pixels")
    timings["tokenizer_s"] = time.perf_counter() - t
  if "transformer" in stages:
    t = time.perf_counter()
    report["transformer"] = generation.evaluate_transformer(
        config, loaded, ref, train, feature_fn, num_samples=num_samples,
        class_names=class_names, batch_size=batch_size, seed=seed,
        progress=progress, sample_labels=sample_labels)
    timings["transformer_s"] = time.perf_counter() - t
  timings["total_s"] = time.perf_counter() - t_start
  report["quality"] = {"targets": targets, "rows": [
      dict(zip(("measure", "measured", "reference", "ratio", "target", "met"),
               row)) for row in quality.summary(report, targets)]}
  report["notes"] = notes
  report["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
  report.update(extra or {})
  path = output or report_lib.default_report_path(workdir)
  report["path"] = report_lib.relative(path, workdir)
  report = report_lib.jsonable(report)
  report_lib.write_report(report, path)
  return report


