"""The reliability suite's loaders part (benchmarks/reliability.py):
mutated TorchScript, msgpack and orbax files."""
import glob
import os
import shutil
import signal

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from reliability_runs import ROOT  # noqa: E402

from maskgit_jax.store import checkpoint as checkpoint_lib  # noqa: E402


# ----------------------------------------------------------------------------
# Part: mutated files for the loaders (in this process).


class _Timeout(Exception):
  pass


def _with_alarm(seconds, fn):
  def handler(signum, frame):
    raise _Timeout()
  old = signal.signal(signal.SIGALRM, handler)
  signal.alarm(seconds)
  try:
    return fn()
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _mutate(data, rng):
  data = bytearray(data)
  kind = rng.choice(["flip", "flip", "truncate", "splice", "zero_run"])
  if kind == "flip":
    for _ in range(rng.randint(1, 4)):
      i = rng.randrange(len(data))
      data[i] ^= 1 << rng.randrange(8)
  elif kind == "truncate":
    data = data[:rng.randrange(len(data))]
  elif kind == "splice":
    i = rng.randrange(len(data))
    data[i:i + 16] = os.urandom(16)
  else:
    i = rng.randrange(len(data))
    data[i:i + 64] = bytes(min(64, len(data) - i))
  return bytes(data), kind


def part_loaders(runner, scratch, args, rng):
  del runner
  import flax  # pylint: disable=import-outside-toplevel
  from maskgit_jax.store import released  # pylint: disable=import-outside-toplevel
  from maskgit_jax.nets import torch_pickle  # pylint: disable=import-outside-toplevel
  marker = scratch / "pwned"
  results = {}

  def fuzz(name, original, load, allowed, n):
    outcomes, unexpected = {}, []
    for _ in range(n):
      data, kind = _mutate(original, rng)
      path = scratch / f"mutant_{name}"
      path.write_bytes(data)
      try:
        _with_alarm(30, lambda: load(path))
        outcome = "read"
      except allowed as e:
        outcome = type(e).__name__
      except _Timeout:
        outcome = "hang"
        unexpected.append({"mutation": kind, "error": "hang"})
      except Exception as e:  # pylint: disable=broad-except
        outcome = "UNEXPECTED " + type(e).__name__
        unexpected.append({"mutation": kind, "error":
                           f"{type(e).__name__}: {str(e)[:150]}"})
      outcomes[outcome] = outcomes.get(outcome, 0) + 1
    results[name] = {"cases": n, "outcomes": outcomes,
                     "unexpected": unexpected[:5],
                     "passed": not unexpected}

  torch_file = (ROOT / "tests" / "data" / "torch_tiny_tensors.pt").read_bytes()
  fuzz("torchscript_zip", torch_file, torch_pickle.read_archive,
       (torch_pickle.WeightsFileError,), args.loader_cases)
  tree = {"params": {"dense": {"kernel": np.arange(64, dtype=np.float32)
                               .reshape(8, 8), "bias": np.ones(8, np.float32)},
                     "scale": np.float32(2.0)}}
  fuzz("released_msgpack", flax.serialization.to_bytes(tree),
       released.read_msgpack, (ValueError,), args.loader_cases)

  # Orbax: mutate one file of the newest of two checkpoints; restore_latest
  # must never raise and never return wrong values.
  base = scratch / "orbax_base"
  shutil.rmtree(base, ignore_errors=True)
  state = lambda k: {"params": {"w": np.arange(2000, dtype=np.float32) * k,  # noqa: E731
                                "b": np.full((7,), k, np.float32)},
                     "step": np.int32(k)}
  ckpt = checkpoint_lib.Checkpointer(str(base), keep=3, async_save=False)
  for k in (2, 4):
    ckpt.save(k, jax.tree.map(np.asarray, state(k)), {"next": k})
  ckpt.close()
  files = sorted(p for p in glob.glob(str(base / "4" / "**" / "*"),
                                      recursive=True) if os.path.isfile(p))
  abstract = jax.eval_shape(lambda: jax.tree.map(np.asarray, state(0)))
  outcomes, silent, unexpected = {}, [], []
  for _ in range(args.loader_cases):
    work = scratch / "orbax_mutant"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base, work)
    # Half of the mutations hit the array data files (state/**/d/*).
    data_files = [f for f in files if f"{os.sep}d{os.sep}" in f]
    target = rng.choice(data_files if rng.random() < 0.5 else files)
    mutant = str(work / os.path.relpath(target, base))
    data, kind = _mutate(open(mutant, "rb").read() or b"\0", rng)
    open(mutant, "wb").write(data)
    rel = os.path.relpath(target, base / "4")
    try:
      c = checkpoint_lib.Checkpointer(str(work), keep=3, async_save=False)
      step, got, data_state = _with_alarm(
          60, lambda: c.restore_latest(abstract, log=lambda m: None))
      c.close()
      want = jax.tree.map(np.asarray, state(step))
      same = all(np.asarray(a).tobytes() == np.asarray(b).tobytes()
                 for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
      same = same and data_state == {"next": step}
      outcome = f"restored step {step}" if same else "WRONG VALUES"
      if not same:
        silent.append({"file": rel, "mutation": kind})
    except _Timeout:
      outcome = "hang"
      unexpected.append({"file": rel, "mutation": kind, "error": "hang"})
    except Exception as e:  # pylint: disable=broad-except
      outcome = "UNEXPECTED " + type(e).__name__
      unexpected.append({"file": rel, "mutation": kind,
                         "error": f"{type(e).__name__}: {str(e)[:150]}"})
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
  results["orbax_checkpoint"] = {
      "cases": args.loader_cases, "outcomes": outcomes,
      "silently_wrong": silent[:10], "silently_wrong_count": len(silent),
      "unexpected": unexpected[:5],
      "passed": not silent and not unexpected}
  results["no_code_ran"] = not marker.exists()
  results["passed"] = all(r["passed"] for r in results.values()
                          if isinstance(r, dict)) and results["no_code_ran"]
  return results


# 
