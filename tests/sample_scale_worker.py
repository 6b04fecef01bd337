"""One process of a multi-process `--num_samples` run (tests/test_sample_scale.py).

  python tests/sample_scale_worker.py OUTPUT NUM_PROCESSES PROCESS_ID PORT \
      BATCH_SIZE

Samples NUM_SAMPLES images of `test_train.tiny_config` (random weights,
8-pixel images) with `scale_lib.write_samples`, shards of SHARD_SIZE and
batches of BATCH_SIZE over this process's devices. NUM_PROCESSES=1 runs
without the distributed runtime. The device count comes from XLA_FLAGS, set
by the caller.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from maskgit_jax.common import multihost  # noqa: E402
import test_train  # noqa: E402  pylint: disable=g-bad-import-order

NUM_SAMPLES = 24
SHARD_SIZE = 4
SEED = 3


def main():
  output, count, index, port, batch_size = sys.argv[1:6]
  count, index = int(count), int(index)
  if count > 1:
    multihost.initialize("on", f"localhost:{port}", count, index)
  from maskgit_jax.generation import sample_lib  # pylint: disable=import-outside-toplevel
  from maskgit_jax.generation import scale_lib  # pylint: disable=import-outside-toplevel
  from maskgit_jax.store import loader  # pylint: disable=import-outside-toplevel
  config = test_train.tiny_config()

  def build():
    return sample_lib.sampler_of(config, loader.load_models(
        config, random_init=True, required=loader.STAGES))
  plan = scale_lib.plan(output, NUM_SAMPLES, config.num_classes, seed=SEED,
                        batch_size=int(batch_size), shard_size=SHARD_SIZE)
  written = scale_lib.write_samples(
      config, build, plan, progress=False,
      after_shard=lambda i: print(f"shard {i}", flush=True))
  multihost.wait_for_all("test_exit")
  print(f"process {jax.process_index()}/{jax.process_count()} local devices "
        f"{jax.local_device_count()} wrote {written}", flush=True)


if __name__ == "__main__":
  main()
