"""The reliability suite's runs and checkpoint readers (benchmarks/reliability.py):
`python -m maskgit_jax.train` in subprocesses sharing one compilation cache,
every checkpoint step restored and fingerprint-checked, train states compared
bit for bit."""
import glob
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maskgit_jax.store import checkpoint as checkpoint_lib  # noqa: E402

STAGES = ("tokenizer", "transformer")
STEPS = 40
SMALL_RUN = [
    "--config=configs/fashion_mnist.py",
    f"--config.tokenizer_training.num_steps={STEPS}",
    f"--config.transformer_training.num_steps={STEPS}",
    "--config.tokenizer_training.checkpoint_every=5",
    "--config.transformer_training.checkpoint_every=5",
    "--config.tokenizer_training.log_every=1",
    "--config.transformer_training.log_every=1",
]


def log(message):
  print(f"[reliability {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Runner:
  """Runs `python -m maskgit_jax.train` with the shared compilation cache."""

  def __init__(self, cache_dir, scratch):
    self.env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
                    JAX_COMPILATION_CACHE_DIR=str(cache_dir))
    self.env.pop("XLA_FLAGS", None)
    self.scratch = pathlib.Path(scratch)
    self.count = 0

  def command(self, workdir, *args):
    return [sys.executable, "-m", "maskgit_jax.train",
            f"--workdir={workdir}", *args]

  def start(self, workdir, *args):
    self.count += 1
    out = open(self.scratch / f"run{self.count}.log", "w")
    proc = subprocess.Popen(self.command(workdir, *args), cwd=ROOT,
                            env=self.env, stdout=out,
                            stderr=subprocess.STDOUT)
    proc.log_path = out.name
    out.close()
    return proc

  def run(self, workdir, *args, timeout=900):
    """(returncode or 'timeout', stdout, stderr, seconds)."""
    start = time.time()
    proc = subprocess.Popen(self.command(workdir, *args), cwd=ROOT,
                            env=self.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
      out, err = proc.communicate(timeout=timeout)
      code = proc.returncode
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      out, err = proc.communicate()
      code = "timeout"
    return code, out, err, time.time() - start


# ----------------------------------------------------------------------------
# Reading checkpoints (every step, full train state, on this process's CPU).


def _read_only(checkpoint_dir):
  return checkpoint_lib.read_only_manager(
      checkpoint_dir, item_handlers={
          "state": ocp.StandardCheckpointHandler(),
          "data": ocp.JsonCheckpointHandler()})


def _restore_step(manager, step):
  device = jax.local_devices()[0]
  sharding = jax.sharding.SingleDeviceSharding(device)
  with checkpoint_lib.quiet_orbax():
    metadata = manager.item_metadata(step)["state"]
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype,
                                       sharding=sharding)
        if hasattr(m, "shape") and hasattr(m, "dtype") else m, metadata)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
  # The fingerprints saved with the checkpoint (checkpoint.py) must match.
  checkpoint_lib.verify_fingerprints(restored["data"], restored["state"],
                                     f"step {step}")
  return jax.device_get(restored["state"]), restored["data"]


def check_every_step(checkpoint_dir):
  """{step: 'ok' | error} for every step orbax lists in `checkpoint_dir`."""
  if not os.path.isdir(checkpoint_dir):
    return {}
  result = {}
  with _read_only(checkpoint_dir) as manager:
    for step in sorted(manager.all_steps()):
      try:
        _restore_step(manager, step)
        result[int(step)] = "ok"
      except Exception as e:  # pylint: disable=broad-except
        result[int(step)] = f"{type(e).__name__}: {str(e)[:200]}"
  return result


def final_state(checkpoint_dir, step):
  with _read_only(checkpoint_dir) as manager:
    return _restore_step(manager, step)


def compare_states(a, b):
  """Bit-level comparison of two restored train states."""
  fa = {jax.tree_util.keystr(k): v
        for k, v in jax.tree_util.tree_leaves_with_path(a)}
  fb = {jax.tree_util.keystr(k): v
        for k, v in jax.tree_util.tree_leaves_with_path(b)}
  differ = []
  for key in sorted(set(fa) | set(fb)):
    x, y = fa.get(key), fb.get(key)
    if x is None or y is None:
      differ.append(key)
      continue
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
      differ.append(key)
  groups = {}
  for key in fa:
    group = key.split("]")[0].strip("['.")
    groups.setdefault(group, []).append(key not in differ)
  return {"leaves": len(fa), "identical": not differ,
          "differing_leaves": differ[:10],
          "by_field": {g: all(v) for g, v in sorted(groups.items())}}


def logged_steps(workdir):
  """{stage: last logged step} from the stages' metrics.jsonl."""
  out = {}
  for stage in STAGES:
    path = os.path.join(workdir, stage, "metrics.jsonl")
    if os.path.exists(path):
      lines = [l for l in open(path).read().splitlines() if l.strip()]
      if lines:
        try:
          out[stage] = json.loads(lines[-1])["step"]
        except (ValueError, KeyError):
          pass
  return out


def count_lines(path):
  return len(read_lines(path, 0))


def read_lines(path, skip):
  try:
    return open(path).read().splitlines()[skip:]
  except FileNotFoundError:
    return []


def tmp_folders(workdir):
  found = []
  for stage in STAGES:
    folder = os.path.join(workdir, stage, "checkpoints")
    try:
      with os.scandir(folder) as it:
        found += [os.path.join(folder, e.name) for e in it if "tmp" in e.name]
    except FileNotFoundError:
      pass
  return found


def aside_checkpoints(workdir):
  return sorted(os.path.relpath(p, workdir) for p in glob.glob(
      os.path.join(workdir, "*", "checkpoints", "*.corrupt-*")))
