"""Stage-2 evaluation: class-conditional samples against real images.

`num_samples` class-conditional samples, decoded with the options of
`config.sampling`. Their classes (`sample_labels`):
  "reference" (the default): in the proportions of the FID reference's own
    labels (`sample_lib.proportional_labels`; at num_samples == num_real the
    same count per class), so that samples and real images are compared over
    the same class mix; on a class-imbalanced folder, classes drawn evenly
    would be scored against a reference of another mix (a cost to FID that
    real images drawn evenly pay too) and the class accuracies would weigh
    the classes differently;
  "balanced": class c gets num_samples // C, one more for c < num_samples % C
    (the ImageNet convention; the same as "reference" on a balanced set).
The metrics:
  fid: against the first `num_real` eval images (the reference), beside the
    real-vs-real floor at the same N;
  precision, recall, density, coverage (k = 3) against the reference;
  class fidelity: a k-NN classifier (k = 5) fitted on `num_train` real
    *train* images; its accuracy per conditioned class on the samples,
    beside its accuracy on the real reference images.
"""

from typing import Any, Dict, Optional, Sequence

import jax
import ml_collections
import numpy as np

from maskgit_jax.evaluation import real_images
from maskgit_jax.generation import sample_lib
from maskgit_jax.libml import sampling
from maskgit_jax.metrics import classifier
from maskgit_jax.metrics import prdc
from maskgit_jax.store import loader

PR_K = prdc.DEFAULT_K
CLASSIFIER_K = classifier.DEFAULT_K
SAMPLE_LABELS = ("reference", "balanced")


def generate_features(sampler: sampling.MaskGitSampler, labels: np.ndarray,
                      rng: jax.Array, feature_fn: real_images.FeatureFn, *,
                      batch_size: int, progress: bool,
                      **decode_options) -> np.ndarray:
  """Features `[len(labels), D]` of one sample per label.

  The batches of `sample_lib.label_batches`, all padded to `batch_size` (one
  compiled shape for every sample count); batch i uses `fold_in(rng, i)`.
  Images are not kept (memory stays bounded).
  """
  def images(batch, key):  # Decoded in the padded batch's one shape.
    return sampler.detokenize(sampler.generate_tokens(batch, key,
                                                      **decode_options))
  return np.concatenate([
      np.asarray(feature_fn(batch_images), np.float32)
      for batch_images in sample_lib.label_batches(
          images, labels, rng, batch_size, shrink=False, progress=progress,
          desc="samples")])


def evaluate_transformer(config: ml_collections.ConfigDict,
                         loaded: loader.LoadedModels, ref: real_images.FidReference,
                         train: real_images.RealSet, feature_fn: real_images.FeatureFn, *,
                         num_samples: int, class_names: Sequence[str],
                         batch_size: int, seed: int, progress: bool,
                         sample_labels: str = "reference") -> Dict[str, Any]:
  """Stage-2 metrics (see the module docstring)."""
  labels = sample_class_ids(sample_labels, num_samples, ref,
                            config.num_classes)
  sampler = sample_lib.sampler_of(config, loaded)
  options = sample_lib.decode_options(config)
  feats = generate_features(sampler, labels, jax.random.PRNGKey(seed),
                            feature_fn, batch_size=batch_size,
                            progress=progress, **options)
  out = {"decode_options": options, "sample_labels": sample_labels}
  out.update(sample_metrics(feats, labels, ref, train, config.num_classes,
                            class_names))
  return out


def check_sample_labels(sample_labels: str) -> None:
  """Raises ValueError unless `sample_labels` is one of SAMPLE_LABELS."""
  if sample_labels not in SAMPLE_LABELS:
    raise ValueError(f"sample_labels={sample_labels!r}: expected one of "
                     f"{SAMPLE_LABELS}")


def sample_class_ids(sample_labels: str, num_samples: int,
                     ref: real_images.FidReference,
                     num_classes: int) -> np.ndarray:
  """The `[num_samples]` classes to sample (see the module docstring)."""
  check_sample_labels(sample_labels)
  if sample_labels == "balanced":
    return sample_lib.balanced_labels(num_samples, num_classes)
  return sample_lib.proportional_labels(
      num_samples, ref.real.labels[:ref.num_reference], num_classes)


def sample_metrics(feats: np.ndarray, labels: Optional[np.ndarray],
                   ref: real_images.FidReference,
                   train: Optional[real_images.RealSet], num_classes: int,
                   class_names: Sequence[str]) -> Dict[str, Any]:
  """The metrics of generated images' features `[N, D]` (whatever made them):
  FID beside its floor at the same N, precision / recall / density /
  coverage, and, given their class `labels` and the `train` features, the
  k-NN class fidelity."""
  num_samples = feats.shape[0]
  floor, floor_note = ref.floor(num_samples)
  real = ref.real.features[:ref.num_reference]
  out = {
      "num_samples": int(num_samples),
      "samples_per_class_min": (int(np.bincount(
          labels, minlength=num_classes).min()) if labels is not None
                                else None),
      "samples_per_class_max": (int(np.bincount(labels).max())
                                if labels is not None else None),
      "fid": ref.fid(feats, "FID"),
      "fid_reference_images": int(ref.num_reference),
      "fid_floor": floor,
      "fid_floor_images": int(num_samples),
      "fid_floor_note": floor_note,
      "precision_recall_k": PR_K,
  }
  out.update(prdc.prdc(real, feats, k=PR_K))
  out["class_fidelity"] = None
  if labels is not None and train is not None:
    out["class_fidelity"] = _class_fidelity(
        train, feats, labels, ref.real.features[:ref.num_reference],
        ref.real.labels[:ref.num_reference], num_classes, class_names)
  return out


def _class_fidelity(train: real_images.RealSet, gen_feats, gen_labels, real_feats,
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


