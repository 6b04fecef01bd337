r"""Wall time and peak memory of `make demo`, from a fresh clone.

  python benchmarks/demo.py [--repo=.] [--out=benchmarks/results/demo.json]

Clones the repository's committed HEAD into a temporary folder (`git clone`
of the local repository: no network) and runs `make demo` there under
`/usr/bin/time -v` (or, without it, `resource.getrusage(RUSAGE_CHILDREN)`).
The clone reuses this checkout's virtual environment (`VENV=`, with make's
`-o` so that the setup step is not re-run: the clone has no network to
install from), so the figures are the training run itself: both stages and
the final sample grid, from an empty workdir and an empty JAX compilation
cache; `make setup` (apt, venv, pip) is not included. Peak memory is the
maximum resident set size of the largest process (the training process).
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import timing  # benchmarks/timing.py


def git(repo, *args):
  return subprocess.run(["git", "-C", repo, *args], check=True,
                        capture_output=True, text=True).stdout.strip()


def parse_time_v(text):
  """Peak RSS (kB) and wall seconds from `/usr/bin/time -v` output."""
  rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
  wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)",
                   text)
  seconds = None
  if wall:
    parts = [float(p) for p in wall.group(1).split(":")]
    seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
  return (int(rss.group(1)) if rss else None), seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repo", default=".")
  parser.add_argument("--out", default="benchmarks/results/demo.json")
  parser.add_argument("--keep", action="store_true",
                      help="keep the temporary clone (its workdir, logs)")
  args = parser.parse_args()
  repo = os.path.abspath(args.repo)
  venv = os.path.join(repo, ".venv")
  if not os.path.exists(os.path.join(venv, "bin", "python")):
    sys.exit(f"no virtual environment at {venv}: run `make setup` first")
  tmp = tempfile.mkdtemp(prefix="maskgit_demo_")
  clone = os.path.join(tmp, "repo")
  try:
    subprocess.run(["git", "clone", "--quiet", repo, clone], check=True)
    commit = git(clone, "rev-parse", "--short", "HEAD")
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS")}
    make = ["make", "demo", f"VENV={venv}", "-o", f"{venv}/.installed"]
    time_v = shutil.which("time") and os.path.exists("/usr/bin/time")
    cmd = (["/usr/bin/time", "-v"] + make) if time_v else make
    log_path = os.path.join(tmp, "demo.log")
    load_start = timing.load_average()
    start = time.perf_counter()
    with open(log_path, "w") as log:
      proc = subprocess.run(cmd, cwd=clone, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path) as f:
      log_text = f.read()
    rss_kb, time_wall = parse_time_v(log_text) if time_v else (None, None)
    rss_kb = rss_kb or children.ru_maxrss
    samples = os.path.join(clone, "runs", "fashion_mnist", "samples.png")
    report = {
        "measured_in_this_run": True,
        "command": " ".join(make), "commit": commit,
        "exit_code": proc.returncode,
        "wall_s": wall, "wall_s_time_v": time_wall,
        "peak_rss_mb": rss_kb / 1024,
        "peak_rss_method": ("/usr/bin/time -v (maximum resident set size)"
                            if time_v else "getrusage(RUSAGE_CHILDREN)"),
        "user_cpu_s": children.ru_utime, "system_cpu_s": children.ru_stime,
        "samples_png_written": os.path.exists(samples),
        "load_average_start": load_start,
        "load_average_end": timing.load_average(),
        "cpu_count": os.cpu_count(),
        "log_tail": log_text[-3000:],
    }
  finally:
    if args.keep:
      print(f"kept {tmp}")
    else:
      shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
  print(f"make demo: exit {report['exit_code']}, {wall / 60:.1f} min wall, "
        f"peak RSS {report['peak_rss_mb']:.0f} MB; wrote {args.out}")
  return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
  from maskgit_jax.common import allocator  # pylint: disable=g-import-not-at-top
  allocator.maybe_reexec()  # as the entry points run
  sys.exit(main())
