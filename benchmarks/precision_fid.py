r"""Do bfloat16 samples have the statistics of float32 samples? (FID check)

  python benchmarks/precision_fid.py [--workdir=checkpoints/fashion_mnist] \
      [--num_samples=200] [--out=benchmarks/results/precision_fid.json]

Uses a trained model (default: the shipped Fashion-MNIST checkpoint; random
weights would make the comparison meaningless) and the FID Inception-v3
features of `maskgit_jax.evaluation.evaluate_lib`. Draws class-balanced sample sets of
`num_samples` images with the checkpoint's decode options: two in float32
(seeds 0, 1) and two in the fast precision mode (transformer bfloat16,
tokenizer --fast_tokenizer_dtype; seeds 2, 3). Then:

  floor      = FID(f32 seed 0, f32 seed 1): what two sample sets of the same
               model and precision score against each other at this N (FID
               is biased upwards at finite N);
  cross      = FID(bf16 seed a, f32 seed b) for the four pairs, mean;
  ratio      = cross mean / floor; the check passes when ratio <= --tolerance
               (default 1.1): switching precision moves the sample
               distribution no more than a reseed does.

Also reported: FID(bf16 seed 2, bf16 seed 3); each set's FID against the
first `num_samples` real eval images of the checkpoint's cached Inception
features (when the cache holds 2 x num_samples real images, with the
real-vs-real floor of the next num_samples); and, for the same seed, the
fraction of tokens bf16 and f32 decoding agree on.
"""
import argparse
import glob
import itertools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.evaluation import generation
from maskgit_jax.evaluation import real_images
from maskgit_jax.generation import sample_lib
from maskgit_jax.libml import sampling
from maskgit_jax.metrics import fid

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cached_real_features(workdir, feature_name, image_size):
  """The eval split's cached real features (`evaluate` wrote them), or None."""
  pattern = os.path.join(workdir, "eval_cache",
                         f"*_eval_{image_size}x{image_size}_{feature_name}.npz")
  for path in sorted(glob.glob(pattern)):
    with np.load(path) as data:
      if "features" in data.files:
        return np.asarray(data["features"], np.float32), path
  return None, None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="checkpoints/fashion_mnist")
  parser.add_argument("--num_samples", type=int, default=200)
  parser.add_argument("--batch_size", type=int, default=50)
  parser.add_argument("--fast_tokenizer_dtype", default="float32",
                      choices=sorted(DTYPES))
  parser.add_argument("--tolerance", type=float, default=1.1)
  parser.add_argument("--out", default="benchmarks/results/precision_fid.json")
  args = parser.parse_args()
  start = time.perf_counter()

  config, s32 = sample_lib.load_workdir(args.workdir)
  s16 = sampling.MaskGitSampler(
      s32.tokenizer.clone(dtype=DTYPES[args.fast_tokenizer_dtype]),
      s32.tokenizer_variables, s32.transformer.clone(dtype=jnp.bfloat16),
      s32.transformer_variables, num_classes=config.num_classes)
  samplers = {"float32": s32, "bfloat16": s16}
  options = sample_lib.decode_options(config)
  labels = sample_lib.balanced_labels(args.num_samples, config.num_classes)
  feature_fn, feature_name = real_images.make_feature_fn(
      batch_size=args.batch_size)

  sets = {("float32", 0), ("float32", 1), ("bfloat16", 2), ("bfloat16", 3)}
  feats = {}
  for mode, seed in sorted(sets):
    feats[(mode, seed)] = generation.generate_features(
        samplers[mode], labels, jax.random.PRNGKey(seed), feature_fn,
        batch_size=args.batch_size, progress=False, **options)
    print(f"{mode} seed {seed}: {len(labels)} samples featurised", flush=True)

  def fid_of(a, b):
    return fid.fid_from_features(feats[a], feats[b])

  floor = fid_of(("float32", 0), ("float32", 1))
  within_bf16 = fid_of(("bfloat16", 2), ("bfloat16", 3))
  cross = {f"bf16 seed {b[1]} vs f32 seed {a[1]}": fid_of(a, b)
           for a, b in itertools.product(
               [("float32", 0), ("float32", 1)],
               [("bfloat16", 2), ("bfloat16", 3)])}
  cross_mean = float(np.mean(list(cross.values())))

  # Same seed, both precisions: how many tokens come out the same.
  batch = [int(c) for c in labels[:args.batch_size]]
  tokens = {mode: np.asarray(s.generate_tokens(batch, jax.random.PRNGKey(0),
                                               **options))
            for mode, s in samplers.items()}
  agreement = float(np.mean(tokens["float32"] == tokens["bfloat16"]))

  real, real_path = cached_real_features(args.workdir, feature_name,
                                         config.image_size)
  vs_real = None
  n = args.num_samples
  if real is not None and real.shape[0] >= 2 * n:
    reference = real[:n]
    vs_real = {"reference_images": n, "cache": real_path,
               "real_vs_real_floor": fid.fid_from_features(real[n:2 * n],
                                                           reference)}
    for (mode, seed), f in sorted(feats.items()):
      vs_real[f"{mode} seed {seed}"] = fid.fid_from_features(f, reference)

  ratio = cross_mean / floor
  report = {
      "workdir": args.workdir, "num_samples": n,
      "decode_options": options, "feature_net": feature_name,
      "fast_mode": {"transformer_dtype": "bfloat16",
                    "tokenizer_dtype": args.fast_tokenizer_dtype},
      "fid_floor_f32_vs_f32": floor, "fid_bf16_vs_bf16": within_bf16,
      "fid_cross": cross, "fid_cross_mean": cross_mean,
      "ratio_cross_to_floor": ratio, "tolerance": args.tolerance,
      "passed": bool(ratio <= args.tolerance),
      "same_seed_token_agreement": agreement,
      "same_seed_token_agreement_images": len(batch),
      "fid_vs_real": vs_real,
      "seconds": time.perf_counter() - start,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
  print(f"FID f32 vs f32 (floor) {floor:.2f}; bf16 vs f32 mean "
        f"{cross_mean:.2f} (ratio {ratio:.3f}); bf16 vs bf16 "
        f"{within_bf16:.2f}; same-seed token agreement {agreement:.1%}")
  if vs_real:
    print("vs real:", {k: round(v, 2) for k, v in vs_real.items()
                       if isinstance(v, float)})
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
