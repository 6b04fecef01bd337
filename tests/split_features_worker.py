"""One process of tests/test_samples_eval.py's split feature extraction.

  python tests/split_features_worker.py OUT_PREFIX NUM_PROCESSES PROCESS_ID PORT

Featurises 11 fake "images" with `samples_eval.split_features` (process p
takes images p, p + P, ...) and writes the gathered features, which every
process must hold whole and in order, to OUT_PREFIX<process>.npz.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from maskgit_jax.common import multihost  # noqa: E402


def main():
  prefix, count, index, port = sys.argv[1:5]
  multihost.initialize("on", f"localhost:{port}", int(count), int(index))
  from maskgit_jax.evaluation import samples_eval  # pylint: disable=import-outside-toplevel
  images = np.arange(11 * 3, dtype=np.float32).reshape(11, 3)
  seen = []

  def feature_fn(x):
    seen.append(len(x))
    return np.asarray(x) * 2 + 1  # float32 in, unchanged by _as_float
  out = samples_eval.split_features(images, feature_fn, batch_size=4)
  mine = len(range(int(index), 11, int(count)))
  assert sum(seen) == mine and max(seen) <= 4, seen
  np.savez(f"{prefix}{index}.npz", features=out)
  multihost.wait_for_all("split_done")


if __name__ == "__main__":
  main()
