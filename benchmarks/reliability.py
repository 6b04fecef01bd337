r"""Reliability suite (the slow half; the fast half is tests/test_reliability.py).

  python benchmarks/reliability.py [--parts=kill,corrupt,nan,fuzz,loaders]
      [--kills=6] [--write_kills=2] [--step_kills=2] [--fuzz_cases=30]
      [--seed=0]
      [--output=benchmarks/results/reliability.json]

Writes a JSON report and prints a markdown summary. Parts:

  kill     Trains the embedded default (configs/fashion_mnist.py, both stages,
           40 + 40 steps, a checkpoint every 5, asynchronous checkpoints as
           in the config) once uninterrupted, then again with SIGKILL at
           random moments (--kills times: --write_kills of them while orbax
           writes a checkpoint, i.e. its `<step>.orbax-checkpoint-tmp` folder
           exists; --step_kills at a random training step; the rest at a
           random time up to 90% of the uninterrupted run's duration),
           resuming each time with the same command; a run that finishes
           before its planned kill is checked too and the kills go on in a
           fresh folder. After
           every kill each listed checkpoint step of both stages must restore;
           at the end every leaf of the final train states (params, EMA,
           optimizer, RNG, ...) and samples.png must equal the uninterrupted
           run's bit for bit.
  corrupt  Copies the finished run, garbles the newest tokenizer checkpoint
           and truncates the newest transformer one, reruns the command: it
           must warn naming both, move them aside, retrain from the previous
           checkpoints to the same bits; a second rerun must be quiet.
  nan      The command with a diverging tokenizer learning rate: exit status
           non-zero, one `error:` line naming the step, only good steps
           saved; the same again on a rerun (a clear stop, no crash loop).
  fuzz     --fuzz_cases seeded cases: a random existing config key set to a
           wrong-typed or out-of-range value, or a folder data set of random
           bytes (and variants). Each must exit non-zero with ONE stderr line
           starting `error:` naming the key, value or file, or train
           normally; never a traceback, never a hang (timeout).
  loaders  Random byte mutations of a TorchScript zip, a released-format
           msgpack file and an orbax checkpoint: the readers raise only their
           documented error types (or read the file), never run code, and an
           orbax checkpoint never restores wrong values unnoticed.

Subprocesses share one JAX compilation cache (--cache_dir, default
.jax_cache, as `make test`).
"""
import argparse
import glob
import json
import os
import pathlib
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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


def _progress(workdir):
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


def _count_lines(path):
  return len(_read_lines(path, 0))


def _read_lines(path, skip):
  try:
    return open(path).read().splitlines()[skip:]
  except FileNotFoundError:
    return []


def _tmp_folders(workdir):
  found = []
  for stage in STAGES:
    folder = os.path.join(workdir, stage, "checkpoints")
    try:
      with os.scandir(folder) as it:
        found += [os.path.join(folder, e.name) for e in it if "tmp" in e.name]
    except FileNotFoundError:
      pass
  return found


def _aside(workdir):
  return sorted(os.path.relpath(p, workdir) for p in glob.glob(
      os.path.join(workdir, "*", "checkpoints", "*.corrupt-*")))


# ----------------------------------------------------------------------------
# Part: kill -9 and resume.


def _reference(runner, scratch):
  """The uninterrupted run (made once per invocation)."""
  workdir = scratch / "uninterrupted"
  if not (workdir / "samples.png").exists():
    log("uninterrupted reference run ...")
    code, out, err, seconds = runner.run(workdir, *SMALL_RUN)
    if code != 0:
      raise RuntimeError(f"reference run failed ({code}): {err[-2000:]}")
    _reference.seconds = seconds
    log(f"reference run: {seconds:.0f} s")
  return workdir


def _compare_runs(ref, workdir):
  out = {}
  for stage in STAGES:
    a, _ = final_state(str(ref / stage / "checkpoints"), STEPS)
    b, _ = final_state(str(workdir / stage / "checkpoints"), STEPS)
    out[stage] = compare_states(a, b)["identical"]
  return out


def part_kill(runner, scratch, args, rng):
  ref = _reference(runner, scratch)
  workdir = scratch / "killed"
  shutil.rmtree(workdir, ignore_errors=True)
  # Kinds of kill, in a random order: during a checkpoint write, at a random
  # training step, at a random time (start-up, training, writing samples).
  kinds = (["write"] * args.write_kills + ["step"] * args.step_kills +
           ["time"] * args.kills)[:max(args.kills, args.write_kills)]
  rng.shuffle(kinds)
  if "write" in kinds:  # The first kill: during a tokenizer checkpoint write.
    kinds.remove("write")
    kinds.insert(0, "write")
  max_delay = args.max_delay
  if getattr(_reference, "seconds", None):
    max_delay = max(args.min_delay + 1, 0.9 * _reference.seconds)
  kills, attempts, unreadable, completed = [], 0, [], []
  start = time.time()
  while True:
    attempts += 1
    if attempts > args.kills * 3 + 5:
      raise RuntimeError("too many attempts; see the logs in " + str(scratch))
    index = len(kills)
    plan = "finish" if index >= len(kinds) else kinds[index]
    lines_before = {stage: _count_lines(workdir / stage / "metrics.jsonl")
                    for stage in STAGES}
    proc = runner.start(workdir, *SMALL_RUN)
    t0 = time.time()
    record = None
    if plan == "time":
      delay = rng.uniform(args.min_delay, max_delay)
      try:
        proc.wait(timeout=delay)
      except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        record = {"kind": "random time", "after_s": round(delay, 2)}
    elif plan == "step":
      # The first stage not yet complete, at a random step after its newest
      # checkpoint (where this attempt resumes).
      stage = next((st for st in STAGES if not (
          workdir / st / "checkpoints" / str(STEPS)).is_dir()), STAGES[-1])
      done = max([0] + [int(n) for n in os.listdir(workdir / stage /
                                                   "checkpoints")
                        if n.isdigit()]) if (
                            workdir / stage / "checkpoints").is_dir() else 0
      target = rng.randint(min(done + 1, STEPS), STEPS)
      while proc.poll() is None:
        new_lines = _read_lines(workdir / stage / "metrics.jsonl",
                                lines_before[stage])
        steps = [json.loads(l)["step"] for l in new_lines if l.endswith("}")]
        if steps and max(steps) >= target:
          proc.send_signal(signal.SIGKILL)
          record = {"kind": "at a random training step",
                    "after_s": round(time.time() - t0, 2),
                    "target": f"{stage} step {target}"}
          break
        time.sleep(0.02)
    elif plan == "write":
      # Alternate the stages (any stage once the tokenizer is complete), and
      # not always the first write of the attempt: wait a random time first.
      done = sum(k["kind"] == "during checkpoint write" for k in kills)
      stage = STAGES[done % 2]
      if (workdir / "tokenizer" / "checkpoints" / str(STEPS)).is_dir():
        stage = None
      not_before = t0 + rng.uniform(0, args.max_delay / 3)
      while proc.poll() is None:
        tmp = _tmp_folders(workdir) if time.time() >= not_before else []
        if stage:
          tmp = [p for p in tmp if f"{os.sep}{stage}{os.sep}" in p]
        if tmp:
          proc.send_signal(signal.SIGKILL)
          record = {"kind": "during checkpoint write",
                    "after_s": round(time.time() - t0, 2),
                    "writing": [os.path.relpath(p, workdir) for p in tmp]}
          break
        time.sleep(0.002)
    proc.wait()
    if record is None:
      if proc.returncode != 0:
        raise RuntimeError(f"run exited with {proc.returncode}; log: "
                           f"{open(proc.log_path).read()[-3000:]}")
      if plan == "finish":
        break
      # Finished before the planned kill: check this run too, then go on
      # killing a fresh one.
      completed.append({"after_kills": len(kills), "final_state_bit_identical":
                        _compare_runs(ref, workdir)})
      log(f"attempt {attempts}: finished before the planned kill "
          f"({completed[-1]}); continuing on a fresh workdir")
      shutil.rmtree(workdir)
      continue
    # State after the kill.
    record["progress"] = _progress(str(workdir))
    record["tmp_left_behind"] = [os.path.relpath(p, workdir)
                                 for p in _tmp_folders(workdir)]
    record["checkpoints"] = {}
    for stage in STAGES:
      steps = check_every_step(str(workdir / stage / "checkpoints"))
      record["checkpoints"][stage] = sorted(steps)
      bad = {s: e for s, e in steps.items() if e != "ok"}
      if bad:
        unreadable.append({"kill": len(kills) + 1, "stage": stage,
                           "steps": bad})
    record["all_listed_steps_readable"] = not any(
        u["kill"] == len(kills) + 1 for u in unreadable)
    resumed = [l for l in open(proc.log_path).read().splitlines()
               if "resumed from step" in l or "unreadable" in l]
    record["log"] = resumed[-4:]
    kills.append(record)
    log(f"kill {len(kills)} ({record['kind']}, {record['after_s']} s): "
        f"progress {record['progress']}, checkpoints "
        f"{record['checkpoints']}, tmp left {record['tmp_left_behind']}")
  seconds = time.time() - start
  full_log = open(proc.log_path).read()
  comparisons = {}
  for stage in STAGES:
    a, _ = final_state(str(ref / stage / "checkpoints"), STEPS)
    b, _ = final_state(str(workdir / stage / "checkpoints"), STEPS)
    comparisons[stage] = compare_states(a, b)
  samples_equal = ((ref / "samples.png").read_bytes() ==
                   (workdir / "samples.png").read_bytes())
  bad_lines = []
  for stage in STAGES:
    for i, line in enumerate(
        (workdir / stage / "metrics.jsonl").read_text().splitlines()):
      try:
        json.loads(line)
      except ValueError:
        bad_lines.append(f"{stage}/metrics.jsonl:{i + 1}")
  result = {
      "command": "python -m maskgit_jax.train --workdir=DIR " +
                 " ".join(SMALL_RUN),
      "kills": len(kills),
      "kills_during_checkpoint_write": sum(
          k["kind"] == "during checkpoint write" for k in kills),
      "kills_at_a_random_step": sum(
          k["kind"] == "at a random training step" for k in kills),
      "attempts": attempts,
      "kill_log": kills,
      "unreadable_after_kill": unreadable,
      "runs_that_finished_before_a_planned_kill": completed,
      "every_listed_checkpoint_readable_after_every_kill": not unreadable,
      "moved_aside": _aside(str(workdir)),
      "final_state_bit_identical": {s: c["identical"]
                                    for s, c in comparisons.items()},
      "comparison": comparisons,
      "samples_png_identical": samples_equal,
      "metrics_jsonl_unparsable_lines": bad_lines,
      "uninterrupted_seconds": round(getattr(_reference, "seconds", 0), 1),
      "killed_and_resumed_seconds": round(seconds, 1),
      "last_attempt_log_tail": full_log.splitlines()[-3:],
  }
  result["passed"] = bool(
      len(kills) >= args.kills and result["kills_during_checkpoint_write"] >= 1
      and not unreadable and all(result["final_state_bit_identical"].values())
      and samples_equal and not result["moved_aside"] and all(
          all(c["final_state_bit_identical"].values()) for c in completed))
  return result


# ----------------------------------------------------------------------------
# Part: corrupt the newest checkpoints of a finished run.


def part_corrupt(runner, scratch, args, rng):
  del args, rng
  ref = _reference(runner, scratch)
  workdir = scratch / "corrupted"
  shutil.rmtree(workdir, ignore_errors=True)
  shutil.copytree(ref, workdir)
  (workdir / "samples.png").unlink()
  tok = workdir / "tokenizer" / "checkpoints" / str(STEPS)
  tr = workdir / "transformer" / "checkpoints" / str(STEPS)
  garbled = [p for p in glob.glob(str(tok / "state" / "**" / "d" / "*"),
                                  recursive=True) if os.path.isfile(p)]
  for p in garbled:
    size = os.path.getsize(p)
    with open(p, "wb") as f:
      f.write(np.random.RandomState(0).bytes(size))
  truncated = [p for p in glob.glob(str(tr / "**" / "*"), recursive=True)
               if os.path.isfile(p)]
  for p in truncated:
    with open(p, "r+b") as f:
      f.truncate(os.path.getsize(p) // 2)
  log("corrupt: rerun after garbling tokenizer/40 and truncating "
      "transformer/40 ...")
  code, out, err, seconds = runner.run(workdir, *SMALL_RUN)
  lines = out.splitlines()
  warned = {stage: any(f"{stage}/checkpoints/{STEPS} is unreadable" in l
                       for l in lines) for stage in STAGES}
  moved = {stage: any(f"{stage}/checkpoints/{STEPS} aside" in l
                      for l in lines) for stage in STAGES}
  resumed = [l for l in lines if "resumed from step" in l]
  comparisons = {}
  for stage in STAGES:
    a, _ = final_state(str(ref / stage / "checkpoints"), STEPS)
    b, _ = final_state(str(workdir / stage / "checkpoints"), STEPS)
    comparisons[stage] = compare_states(a, b)["identical"]
  code2, out2, err2, seconds2 = runner.run(workdir, *SMALL_RUN)
  quiet = code2 == 0 and "unreadable" not in out2 + err2
  result = {
      "damage": {"tokenizer": f"{len(garbled)} array files of step {STEPS} "
                              "overwritten with random bytes",
                 "transformer": f"{len(truncated)} files of step {STEPS} "
                                "truncated to half"},
      "exit_code": code, "seconds": round(seconds, 1),
      "warned_naming_the_bad_checkpoint": warned,
      "moved_aside": _aside(str(workdir)),
      "moved_aside_logged": moved,
      "resumed": resumed,
      "stderr_tail": err.strip().splitlines()[-3:],
      "final_state_bit_identical": comparisons,
      "samples_png_identical": (ref / "samples.png").read_bytes() ==
                               (workdir / "samples.png").read_bytes(),
      "second_rerun": {"exit_code": code2, "seconds": round(seconds2, 1),
                       "no_warnings": quiet,
                       "stdout_tail": out2.strip().splitlines()[-3:]},
  }
  result["passed"] = bool(code == 0 and all(warned.values()) and
                          all(moved.values()) and all(comparisons.values())
                          and result["samples_png_identical"] and quiet)
  return result


# ----------------------------------------------------------------------------
# Part: NaN from the command line.


def part_nan(runner, scratch, args, rng):
  del args, rng
  workdir = scratch / "nan"
  shutil.rmtree(workdir, ignore_errors=True)
  flags = [*SMALL_RUN, "--config.tokenizer_training.g_optimizer.lr=1e30",
           "--config.tokenizer_training.g_optimizer.warmup_steps=0",
           "--config.tokenizer_training.checkpoint_every=1"]
  runs = []
  for _ in range(2):
    code, out, err, seconds = runner.run(workdir, *flags, timeout=600)
    lines = err.strip().splitlines()
    steps = sorted(int(n) for n in os.listdir(
        workdir / "tokenizer" / "checkpoints") if n.isdigit()) if (
            workdir / "tokenizer" / "checkpoints").is_dir() else []
    bad_step = None
    if len(lines) == 1 and " at step " in lines[0]:
      bad_step = int(lines[0].split(" at step ")[1].split(".")[0])
    runs.append({"exit_code": code, "stderr": lines[:5],
                 "seconds": round(seconds, 1), "bad_step": bad_step,
                 "saved_steps": steps, "transformer_started": (
                     workdir / "transformer").exists()})
  first = runs[0]
  ok = all(r["exit_code"] not in (0, "timeout") and len(r["stderr"]) == 1 and
           r["stderr"][0].startswith("error: ") and r["bad_step"] and
           all(s < r["bad_step"] for s in r["saved_steps"]) and
           not r["transformer_started"] for r in runs)
  return {"flags": flags[len(SMALL_RUN):], "runs": runs,
          "same_stop_on_rerun": runs[0]["bad_step"] == runs[1]["bad_step"],
          "passed": bool(ok and first["bad_step"] == runs[1]["bad_step"])}


# ----------------------------------------------------------------------------
# Part: fuzzed configs and inputs.


TINY = [
    "--config.tokenizer.preset=tiny", "--config.transformer.preset=tiny",
    "--config.image_size=8", "--config.tokenizer_training.num_steps=2",
    "--config.transformer_training.num_steps=2",
    "--config.tokenizer_training.batch_size=8",
    "--config.transformer_training.batch_size=8",
    "--config.tokenizer_training.image_every=0",
    "--config.transformer_training.image_every=0",
    "--config.sampling.samples_per_class=1", "--config.sampling.num_iter=2",
    "--config.sampling.grid_scale=1",
]


def _leaf_keys():
  sys.path.insert(0, str(ROOT))
  from maskgit_jax import cli  # pylint: disable=import-outside-toplevel
  config = cli.load_config_file(str(ROOT / "configs" / "fashion_mnist.py"))
  leaves = {}

  def walk(node, prefix):
    for key in node.keys():
      value = node[key]
      name = f"{prefix}{key}"
      if hasattr(value, "keys"):
        walk(value, name + ".")
      else:
        leaves[name] = value
  walk(config, "")
  return leaves


def _bad_value(value, rng):
  """A wrong-typed or out-of-range value for a field holding `value`."""
  if isinstance(value, bool):
    return rng.choice(["maybe", "2", "yes please", "[]"])
  if isinstance(value, int):
    return rng.choice(["-7", "0", "-1", "abc", "2.5", "1e400", "[]",
                       str(10**15)])
  if isinstance(value, float):
    return rng.choice(["-1.0", "nan", "inf", "-inf", "abc", "1e30", "()"])
  if isinstance(value, str):
    return rng.choice(["bogus", "", "no_such_name_123", "../../etc/passwd",
                       "\u00e9\u00e8\u00ea", "-1"])
  if isinstance(value, tuple):
    return rng.choice(["(3,1,1)", "()", "(-1,-1,1)", "(0,1,1)", "('x',)",
                       "(1,2)", "abc"])
  return rng.choice(["abc", "-1", "()"])


def _folder_case(root, kind, rng):
  """A data folder of random bytes (and variants)."""
  shutil.rmtree(root, ignore_errors=True)
  exts = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
  from PIL import Image  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel

  def png_bytes(value):
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()

  def truncated_jpeg():
    buf = io.BytesIO()
    noise = np.random.RandomState(rng.randint(0, 2**31)).randint(
        0, 256, (64, 64, 3)).astype(np.uint8)
    Image.fromarray(noise).save(buf, "JPEG")
    data = buf.getvalue()
    return data[:rng.randint(len(data) // 3, 2 * len(data) // 3)]
  for c in ("a", "b"):
    os.makedirs(root / c)
    for i in range(rng.randint(5, 10)):
      name = root / c / f"{i}{rng.choice(exts)}"
      if kind == "random_bytes":
        data = os.urandom(rng.randint(0, 3000))
      elif kind == "truncated_jpegs":
        # Pass the header check, fail to decode when loaded.
        name = root / c / f"{i}.jpg"
        data = truncated_jpeg()
      elif kind == "empty_files":
        data = b""
      else:  # one class fine, the other random bytes
        data = os.urandom(rng.randint(10, 500))
        if c == "a":
          data = png_bytes(rng.randint(0, 255))
          name = root / c / f"{i}.png"
      name.write_bytes(data)
  return root


FOLDER_CONFIG = """
import importlib.util
spec = importlib.util.spec_from_file_location("fm", {config!r})
fm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fm)


def get_config():
  config = fm.get_config()
  config.data.source = "folder"
  config.data.path = {path!r}
  return config
"""


_ABSL_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d")


def _verdict(code, err, needles):
  """How the command ended; logged warnings (absl format) may precede the
  error line."""
  lines = [l for l in err.strip().splitlines() if l.strip()]
  if code == "timeout":
    return "hang (timeout)"
  if "Traceback" in err:
    return "traceback"
  if code == 0:
    return "accepted"
  errors = [l for l in lines if l.startswith("error: ")]
  if len(errors) != 1 or lines[-1] != errors[0]:
    return "no single final 'error:' line"
  if any(not _ABSL_LOG_LINE.match(l) for l in lines[:-1]):
    return "stray stderr lines"
  if " stopped: the loss is " in errors[0]:
    return "non-finite loss stop (names the step)"
  if not any(n and n in errors[0] for n in needles):
    return "does not name the key, value or file"
  return "clean error"


def part_fuzz(runner, scratch, args, rng):
  leaves = _leaf_keys()
  keys = sorted(k for k in leaves if k not in ("class_names",))
  cases = []
  n = args.fuzz_cases
  folder_kinds = ["random_bytes", "truncated_jpegs", "empty_files",
                  "one_class_of_random_bytes"]
  n_folder = max(len(folder_kinds), n // 6)
  for i in range(n):
    workdir = scratch / f"fuzz{i}"
    shutil.rmtree(workdir, ignore_errors=True)
    if i < n - n_folder:
      key = rng.choice(keys)
      value = _bad_value(leaves[key], rng)
      flags = ["--config=configs/fashion_mnist.py", *TINY,
               f"--config.{key}={value}"]
      needles = [key, key.split(".")[-1], value] if value else [key,
                                                                 key.split(".")[-1]]
      case = {"kind": "config", "key": key, "value": value,
              "default": repr(leaves[key])}
    else:
      kind = folder_kinds[(i - (n - n_folder)) % len(folder_kinds)]
      root = _folder_case(scratch / f"images{i}", kind, rng)
      config = scratch / f"folder_config{i}.py"
      config.write_text(FOLDER_CONFIG.format(
          config=str(ROOT / "configs" / "fashion_mnist.py"), path=str(root)))
      flags = [f"--config={config}", *TINY]
      needles = [str(root)]
      case = {"kind": "folder", "folder": kind}
    code, out, err, seconds = runner.run(workdir, *flags,
                                         timeout=args.fuzz_timeout)
    case.update(exit_code=code, seconds=round(seconds, 1),
                stderr=err.strip().splitlines()[-3:],
                verdict=_verdict(code, err, needles))
    if case["verdict"] == "traceback":
      case["traceback_tail"] = err.strip().splitlines()[-1:]
    cases.append(case)
    log(f"fuzz {i + 1}/{n}: {case.get('key', case.get('folder'))}="
        f"{case.get('value', '')!s:.30} -> {case['verdict']} "
        f"({seconds:.0f} s)")
    shutil.rmtree(workdir, ignore_errors=True)
  counts = {}
  for c in cases:
    counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
  fine = ("clean error", "accepted", "non-finite loss stop (names the step)")
  bad = [c for c in cases if c["verdict"] not in fine]
  return {"cases": cases, "verdicts": counts,
          "failures": len(bad), "passed": not bad,
          "accepted": [f"{c.get('key', c.get('folder'))}={c.get('value', '')}"
                       for c in cases if c["verdict"] == "accepted"]}


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


# ----------------------------------------------------------------------------


PARTS = {"kill": part_kill, "corrupt": part_corrupt, "nan": part_nan,
         "fuzz": part_fuzz, "loaders": part_loaders}


def summary(report):
  lines = ["## Reliability", "", "| part | result | details |",
           "|---|---|---|"]
  parts = report["parts"]
  if "kill" in parts:
    k = parts["kill"]
    if "error" in k:
      lines.append(f"| kill -9 + resume | ERROR | {k['error'][:200]} |")
    else:
      lines.append(
          f"| kill -9 + resume | {'pass' if k['passed'] else 'FAIL'} | "
          f"{k['kills']} kills ({k['kills_during_checkpoint_write']} during a "
          f"checkpoint write); every listed checkpoint readable after every "
          f"kill: {k['every_listed_checkpoint_readable_after_every_kill']}; "
          f"final states bit-identical: {k['final_state_bit_identical']}; "
          f"samples.png identical: {k['samples_png_identical']}; "
          f"{k['uninterrupted_seconds']} s uninterrupted, "
          f"{k['killed_and_resumed_seconds']} s killed and resumed |")
  if "corrupt" in parts:
    c = parts["corrupt"]
    if "error" in c:
      lines.append(f"| corrupt latest | ERROR | {c['error'][:200]} |")
    else:
      lines.append(
          f"| corrupt latest checkpoints | {'pass' if c['passed'] else 'FAIL'}"
          f" | warned: {c['warned_naming_the_bad_checkpoint']}; moved aside: "
          f"{len(c['moved_aside'])}; bit-identical after retraining: "
          f"{c['final_state_bit_identical']}; quiet second rerun: "
          f"{c['second_rerun']['no_warnings']} |")
  if "nan" in parts:
    n = parts["nan"]
    if "error" in n:
      lines.append(f"| NaN loss (CLI) | ERROR | {n['error'][:200]} |")
    else:
      r = n["runs"][0]
      lines.append(
          f"| NaN loss (CLI) | {'pass' if n['passed'] else 'FAIL'} | exit "
          f"{r['exit_code']}, `{(r['stderr'] or [''])[0][:90]}...`; saved "
          f"{r['saved_steps']}; same stop on rerun: "
          f"{n['same_stop_on_rerun']} |")
  if "fuzz" in parts:
    f = parts["fuzz"]
    if "error" in f:
      lines.append(f"| config/input fuzz | ERROR | {f['error'][:200]} |")
    else:
      lines.append(
          f"| config/input fuzz | {'pass' if f['passed'] else 'FAIL'} | "
          f"{len(f['cases'])} cases: {f['verdicts']} |")
  if "loaders" in parts:
    l = parts["loaders"]
    if "error" in l:
      lines.append(f"| mutated files | ERROR | {l['error'][:200]} |")
    else:
      details = "; ".join(
          f"{name}: {r['outcomes']}" for name, r in l.items()
          if isinstance(r, dict))
      lines.append(f"| mutated files | {'pass' if l['passed'] else 'FAIL'} | "
                   f"{details}; no code ran: {l['no_code_ran']} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default=",".join(PARTS))
  parser.add_argument("--kills", type=int, default=6)
  parser.add_argument("--write_kills", type=int, default=2)
  parser.add_argument("--step_kills", type=int, default=2)
  parser.add_argument("--min_delay", type=float, default=4.0)
  parser.add_argument("--max_delay", type=float, default=40.0)
  parser.add_argument("--fuzz_cases", type=int, default=30)
  parser.add_argument("--fuzz_timeout", type=int, default=300)
  parser.add_argument("--loader_cases", type=int, default=60)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cache_dir", default=str(ROOT / ".jax_cache"))
  parser.add_argument("--scratch", default=None,
                      help="work folder (default: a temporary one, removed)")
  parser.add_argument("--output",
                      default=str(ROOT / "benchmarks" / "results" /
                                  "reliability.json"))
  args = parser.parse_args()
  parts = [p for p in args.parts.split(",") if p]
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    parser.error(f"unknown parts {unknown}; known: {sorted(PARTS)}")
  scratch = pathlib.Path(args.scratch or tempfile.mkdtemp(
      prefix="maskgit_reliability_"))
  scratch.mkdir(parents=True, exist_ok=True)
  runner = Runner(args.cache_dir, scratch)
  report = {"machine": {"platform": platform.platform(),
                        "cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "jax": jax.__version__, "orbax": ocp.__version__
                        if hasattr(ocp, "__version__") else None},
            "seed": args.seed, "parts": {}}
  start = time.time()
  try:
    for name in parts:
      rng = random.Random(f"{args.seed}-{name}")
      t0 = time.time()
      log(f"part {name} ...")
      try:
        report["parts"][name] = PARTS[name](runner, scratch, args, rng)
      except Exception as e:  # pylint: disable=broad-except
        report["parts"][name] = {"error": f"{type(e).__name__}: {e}",
                                 "passed": False}
      report["parts"][name]["seconds"] = round(time.time() - t0, 1)
      log(f"part {name}: {'pass' if report['parts'][name]['passed'] else 'FAIL'}"
          f" ({report['parts'][name]['seconds']:.0f} s)")
  finally:
    report["seconds"] = round(time.time() - start, 1)
    report["passed"] = all(p.get("passed") for p in report["parts"].values())
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
      json.dump(report, f, indent=1, default=str)
    if args.scratch is None:
      shutil.rmtree(scratch, ignore_errors=True)
  print(summary(report))
  print(f"\n(report: {args.output}; {report['seconds']:.0f} s)")
  return 0 if report["passed"] else 1


if __name__ == "__main__":
  sys.exit(main())
