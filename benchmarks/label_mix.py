r"""What do evenly spread sample classes cost FID on a class-imbalanced set?

  python benchmarks/label_mix.py --workdir=RUN [--num_real=900] \
      [--draws=20] [--out=benchmarks/results/label_mix.json]

A perfect class-conditional generator stands in: real held-out images. The
run's evaluation split (read, featurised and cached exactly as `python -m
maskgit_jax.evaluate --workdir=RUN` does, FID Inception-v3) is split into
the FID reference (its first `num_real` images) and the held-out rest. From
the held-out images, `draws` times, M images are drawn without replacement
in two class mixes:

  reference  class c gets M x its share of the reference (what `evaluate
             --sample_labels=reference`, the default, asks of the sampler);
  balanced   M / C of each class (what `--sample_labels=balanced` asks);

with M the largest count both mixes can draw from the held-out images. Each
set's FID against the reference is reported (mean, standard deviation,
min, max over the draws) and the ratio balanced / reference: what spreading
the classes evenly costs images that are real. On a balanced data set the
ratio is ~1.
"""
import argparse
import json
import os
import time

import numpy as np

from maskgit_jax import data as data_lib
from maskgit_jax.evaluation import real_images
from maskgit_jax.generation import sample_lib
from maskgit_jax.metrics import fid
from maskgit_jax.store import loader


def draw(rng, pool_labels, counts):
  """Indices into the pool: counts[c] of class c, without replacement."""
  return np.concatenate([
      rng.choice(np.flatnonzero(pool_labels == c), n, replace=False)
      for c, n in enumerate(counts) if n])


def largest_common_size(ref_labels, pool_counts, num_classes):
  """The largest M whose reference-mix and even-mix counts both fit the
  pool."""
  best = 0
  for m in range(1, int(pool_counts.sum()) + 1):
    prop = np.bincount(sample_lib.proportional_labels(m, ref_labels,
                                                      num_classes),
                       minlength=num_classes)
    even = np.bincount(sample_lib.balanced_labels(m, num_classes),
                       minlength=num_classes)
    if np.all(prop <= pool_counts) and np.all(even <= pool_counts):
      best = m
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--num_real", type=int, default=900)
  parser.add_argument("--draws", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--cache_dir", default=None)
  parser.add_argument("--out", default="benchmarks/results/label_mix.json")
  args = parser.parse_args()

  t0 = time.perf_counter()
  config = loader.run_config(args.workdir)
  dcfg = data_lib.config.for_model(config, config.tokenizer.channels)
  eval_ds = data_lib.create_dataset(
      dcfg, "eval", args.batch_size,
      cache_dir=os.path.join(args.workdir, "data_index"))
  feature_fn, feature_name = real_images.make_feature_fn(
      batch_size=args.batch_size)
  real = real_images.real_features(
      eval_ds, "eval", eval_ds.num_examples, feature_fn,
      feature_name=feature_name,
      cache_dir=args.cache_dir or os.path.join(args.workdir, "eval_cache"),
      batch_size=args.batch_size, progress=True)
  num_classes = int(config.num_classes)
  ref_feats = real.features[:args.num_real]
  ref_labels = real.labels[:args.num_real]
  pool_feats = real.features[args.num_real:]
  pool_labels = real.labels[args.num_real:]
  pool_counts = np.bincount(pool_labels, minlength=num_classes)
  m = largest_common_size(ref_labels, pool_counts, num_classes)
  if m < 2 * num_classes:
    raise SystemExit(f"error: too few held-out images per class ({m} "
                     f"drawable in both mixes)")
  mu, sigma = fid.compute_statistics(ref_feats)
  counts = {
      "reference": np.bincount(sample_lib.proportional_labels(
          m, ref_labels, num_classes), minlength=num_classes),
      "balanced": np.bincount(sample_lib.balanced_labels(m, num_classes),
                              minlength=num_classes)}
  rng = np.random.default_rng(0)
  fids = {k: [] for k in counts}
  for _ in range(args.draws):
    for mix, c in counts.items():
      idx = draw(rng, pool_labels, c)
      fids[mix].append(fid.frechet_distance(
          *fid.compute_statistics(pool_feats[idx]), mu, sigma))
  summary = {mix: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                   "min": float(np.min(v)), "max": float(np.max(v)),
                   "counts": counts[mix].tolist()}
             for mix, v in fids.items()}
  result = {
      "workdir": args.workdir,
      "class_names": list(config.get("class_names") or ()),
      "num_real": int(ref_feats.shape[0]),
      "reference_counts": np.bincount(ref_labels,
                                      minlength=num_classes).tolist(),
      "held_out_counts": pool_counts.tolist(),
      "images_per_set": int(m), "draws": args.draws,
      "fid": summary,
      "balanced_over_reference": (summary["balanced"]["mean"] /
                                  summary["reference"]["mean"]),
      "feature_net": feature_name,
      "seconds": round(time.perf_counter() - t0, 1),
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps({k: result[k] for k in (
      "images_per_set", "fid", "balanced_over_reference")}, indent=1))


if __name__ == "__main__":
  main()
