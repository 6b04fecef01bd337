"""The TorchScript FID Inception, timed by torch: inception_throughput.py's
other side (run under an interpreter that has torch; nothing of maskgit_jax
is imported).

  python inception_torch_worker.py WEIGHTS.pt BATCH.npy

BATCH.npy is `[batch, 299, 299, 3]` float32 in the network's input range.
Prints one JSON line (torch version, threads, and the path of an .npy with
the batch's `[batch, 2048]` features), then, for every line "run" on stdin,
the seconds of one forward of the batch.
"""
import json
import sys
import tempfile
import time

import numpy as np
import torch


def main(weights: str, batch_path: str) -> int:
  torch.set_grad_enabled(False)
  net = torch.jit.load(weights, map_location="cpu").eval()
  x = torch.from_numpy(np.load(batch_path)).permute(0, 3, 1, 2).contiguous()
  feats = net(x).numpy()
  out = tempfile.NamedTemporaryFile(suffix=".npy", delete=False)
  np.save(out, feats)
  out.close()
  print(json.dumps({"torch_version": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "features": out.name}), flush=True)
  for line in sys.stdin:
    if line.strip() != "run":
      continue
    start = time.perf_counter()
    net(x)
    print(time.perf_counter() - start, flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(*sys.argv[1:]))
