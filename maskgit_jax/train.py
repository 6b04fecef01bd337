r"""Train both stages: `python -m maskgit_jax.train --config=CONFIG --workdir=DIR`.

  python -m maskgit_jax.train --config=configs/fashion_mnist.py \
      --workdir=runs/fashion_mnist [--config.key=value ...]

The run resumes from DIR's newest checkpoint; SIGTERM saves and exits.
Several processes (hosts): run the same command on each; see
`maskgit_jax/common/multihost.py` for --distributed, --coordinator_address,
--num_processes and --process_id, and launch/ for pods and clusters.
"""
if __name__ == "__main__":  # before the imports below, which take seconds
  from maskgit_jax.common import allocator
  allocator.maybe_reexec()

from absl import app
from absl import flags
from ml_collections import config_flags

from maskgit_jax import cli
from maskgit_jax.common import cpu_devices
from maskgit_jax.common import multihost
from maskgit_jax.evaluation import evaluators
from maskgit_jax.train_lib import run
from maskgit_jax.train_lib import time_budget
from maskgit_jax.train_lib import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (created).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required.")
  try:
    note = cpu_devices.apply(_CONFIG.value.get("cpu_devices", 0))
    if note:
      print(note)
    multihost.initialize_from_flags()
    try:
      run.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                             hooks=evaluators.make_hooks,
                             started=time_budget.process_start_time())
    except trainer.Preempted as e:
      print(f"stopped: {e}; run the same command to resume.")
    # Process 0 may still write the sample grid or evaluate.
    multihost.wait_for_all("maskgit_train_exit")
  except (ValueError, FileNotFoundError, trainer.NonFiniteLossError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  cli.run(main)
