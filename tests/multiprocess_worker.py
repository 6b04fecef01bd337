"""One process of a multi-process tiny training run (tests/test_multiprocess.py).

  python tests/multiprocess_worker.py WORKDIR OUT_PREFIX NUM_PROCESSES \
      PROCESS_ID PORT [slow_eval]

Trains `test_train.tiny_config` (mesh (1, -1, 1): every parameter sharded
over the devices of all processes) with `maskgit_jax.train_lib.run`, then
writes the final parameters of both stages to OUT_PREFIX<process>.npz.
NUM_PROCESSES=1 runs without the distributed runtime. `slow_eval` adds a
stage-1 evaluator hook that runs for SLOW_EVAL_SECONDS on process 0 (longer
than the 30 s gloo collective timeout) while the others wait; it changes
neither the config nor the weights. The device count comes from XLA_FLAGS,
set by the caller.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from maskgit_jax.common import multihost  # noqa: E402
import test_train  # noqa: E402  pylint: disable=g-bad-import-order


def config_for_test():
  config = test_train.tiny_config(steps=4)
  config.mesh = (1, -1, 1)
  config.transformer_training.num_steps = 8
  for section in (config.tokenizer_training, config.transformer_training):
    section.image_every = 2
  return config


def check_to_host():
  """A [16, 3] array split over all devices of all processes comes back
  whole on every process."""
  mesh = jax.make_mesh((jax.device_count(),), ("x",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
  full = np.arange(48, dtype=np.float32).reshape(16, 3)
  array = jax.make_array_from_callback(full.shape, sharding,
                                       lambda index: full[index])
  assert array.is_fully_addressable == (jax.process_count() == 1)
  np.testing.assert_array_equal(multihost.to_host({"a": array})["a"], full)
  assert multihost.any_process(jax.process_index() == 1) == (
      jax.process_count() > 1)


SLOW_EVAL_SECONDS = 35


def slow_hooks(config, workdir, stage, *, log, **unused):
  """A deliberately slow stage-1 evaluator (defect b of issue 13)."""
  del config, workdir, log
  from maskgit_jax.train_lib import trainer  # pylint: disable=import-outside-toplevel
  if stage != "tokenizer":
    return []
  import time  # pylint: disable=import-outside-toplevel

  def evaluate(step, variables):
    del variables
    time.sleep(SLOW_EVAL_SECONDS)
    return {"slow_seconds": float(SLOW_EVAL_SECONDS), "at": float(step)}
  return [trainer.Hook(name="eval", every=0, fn=evaluate)]


def main():
  workdir, prefix, count, index, port = sys.argv[1:6]
  slow = sys.argv[6:7] == ["slow_eval"]
  count, index = int(count), int(index)
  if count > 1:
    multihost.initialize("on", f"localhost:{port}", count, index)
  from maskgit_jax.train_lib import run  # pylint: disable=import-outside-toplevel
  check_to_host()
  from maskgit_jax.train_lib import trainer  # pylint: disable=import-outside-toplevel
  try:
    config = config_for_test()
    out = run.train_and_evaluate(config, workdir,
                                 hooks=slow_hooks if slow else None)
  except trainer.Preempted as e:  # As `python -m maskgit_jax.train` does.
    print(f"stopped: {e}; run the same command to resume.", flush=True)
    return
  flat = {}
  for stage in ("tokenizer", "transformer"):
    for path, leaf in jax.tree_util.tree_leaves_with_path(out[stage]):
      flat[f"{stage}{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
  np.savez(f"{prefix}{jax.process_index()}.npz", **flat)
  print(f"process {jax.process_index()}/{jax.process_count()} devices "
        f"{jax.device_count()} done", flush=True)


if __name__ == "__main__":
  main()
