"""The reliability suite's kill, corrupt and nan parts
(benchmarks/reliability.py): kill -9 and resume, damaged checkpoints, a
diverging loss."""
import glob
import json
import os
import shutil
import signal
import subprocess
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from reliability_runs import (  # pylint: disable=g-multiple-import  # noqa: E402
    SMALL_RUN, STAGES, STEPS, aside_checkpoints, check_every_step,
    compare_states, count_lines, final_state, log, logged_steps, read_lines,
    tmp_folders)

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
    lines_before = {stage: count_lines(workdir / stage / "metrics.jsonl")
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
        new_lines = read_lines(workdir / stage / "metrics.jsonl",
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
        tmp = tmp_folders(workdir) if time.time() >= not_before else []
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
    record["progress"] = logged_steps(str(workdir))
    record["tmp_left_behind"] = [os.path.relpath(p, workdir)
                                 for p in tmp_folders(workdir)]
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
      "moved_aside": aside_checkpoints(str(workdir)),
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
      "moved_aside": aside_checkpoints(str(workdir)),
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
