r"""Reliability suite (the slow half; the fast half is tests/test_reliability.py).

  python benchmarks/reliability.py [--parts=kill,corrupt,nan,fuzz,sweep,loaders]
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
           normally; never a traceback, never a hang (timeout). Case i's
           key and value depend on the seed, i and the key alone
           (rendezvous hashing over the config's keys), so a key added to
           the config changes about one case in the number of keys, not
           every case after it.
  sweep    Every leaf key of the demo's config set to each of the fuzz's
           bad values for its type, through every check a run makes before
           it writes config.json (in this process, seconds): each refused
           with one line or accepted (listed), never another exception.
  loaders  Random byte mutations of a TorchScript zip, a released-format
           msgpack file and an orbax checkpoint: the readers raise only their
           documented error types (or read the file), never run code, and an
           orbax checkpoint never restores wrong values unnoticed.

Subprocesses share one JAX compilation cache (--cache_dir, default
.jax_cache, as `make test`).
"""
import argparse
import json
import os
import pathlib
import platform
import random
import shutil
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

from reliability_fuzz import part_fuzz  # noqa: E402
from reliability_kill import part_corrupt, part_kill, part_nan  # pylint: disable=g-multiple-import  # noqa: E402
from reliability_loaders import part_loaders  # noqa: E402
from reliability_runs import ROOT, Runner, log  # noqa: E402
from reliability_sweep import part_sweep  # noqa: E402

PARTS = {"kill": part_kill, "corrupt": part_corrupt, "nan": part_nan,
         "fuzz": part_fuzz, "sweep": part_sweep, "loaders": part_loaders}


def _kill_row(k):
  return (f"{k['kills']} kills ({k['kills_during_checkpoint_write']} during "
          f"a checkpoint write); every listed checkpoint readable after every "
          f"kill: {k['every_listed_checkpoint_readable_after_every_kill']}; "
          f"final states bit-identical: {k['final_state_bit_identical']}; "
          f"samples.png identical: {k['samples_png_identical']}; "
          f"{k['uninterrupted_seconds']} s uninterrupted, "
          f"{k['killed_and_resumed_seconds']} s killed and resumed")


def _corrupt_row(c):
  return (f"warned: {c['warned_naming_the_bad_checkpoint']}; moved aside: "
          f"{len(c['moved_aside'])}; bit-identical after retraining: "
          f"{c['final_state_bit_identical']}; quiet second rerun: "
          f"{c['second_rerun']['no_warnings']}")


def _nan_row(n):
  r = n["runs"][0]
  return (f"exit {r['exit_code']}, `{(r['stderr'] or [''])[0][:90]}...`; "
          f"saved {r['saved_steps']}; same stop on rerun: "
          f"{n['same_stop_on_rerun']}")


def _sweep_row(w):
  return (f"{w['overrides']} overrides: {w['refused']} refused with one "
          f"line, {len(w['accepted'])} accepted, {len(w['failures'])} other "
          f"exceptions {w['failures'][:3]}")


def _loaders_row(l):
  details = "; ".join(f"{name}: {r['outcomes']}" for name, r in l.items()
                      if isinstance(r, dict))
  return f"{details}; no code ran: {l['no_code_ran']}"


# Each part's row in the summary: its title and its details.
ROWS = {
    "kill": ("kill -9 + resume", _kill_row),
    "corrupt": ("corrupt latest checkpoints", _corrupt_row),
    "nan": ("NaN loss (CLI)", _nan_row),
    "fuzz": ("config/input fuzz",
             lambda f: f"{len(f['cases'])} cases: {f['verdicts']}"),
    "sweep": ("config sweep", _sweep_row),
    "loaders": ("mutated files", _loaders_row),
}


def summary(report):
  lines = ["## Reliability", "", "| part | result | details |",
           "|---|---|---|"]
  for name, part in report["parts"].items():
    title, details = ROWS[name]
    if "error" in part:
      lines.append(f"| {title} | ERROR | {part['error'][:200]} |")
    else:
      lines.append(f"| {title} | {'pass' if part['passed'] else 'FAIL'} | "
                   f"{details(part)} |")
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
