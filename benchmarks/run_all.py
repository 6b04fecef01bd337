r"""Runs the benchmarks and writes one report: `make bench`.

  python benchmarks/run_all.py [--demo] [--quick] [--skip=NAME,...]

Each benchmark runs in its own process (so peak memory is its own) and
writes its JSON under benchmarks/results/; this driver then writes
benchmarks/results/bench.json (every figure, with targets and how it was
measured) and benchmarks/results/bench.md (the table).

Benchmarks (NAME for --skip / --only):
  sampler_embedded    decode overhead at the Fashion-MNIST shape (8x8 tokens)
  sampler_imagenet    decode overhead, bf16 vs f32, the bf16 sampler against
                      its floor (batches 2 and 8) and parallel vs sequential
                      decoding at the ImageNet-256 shape (random weights)
  precision_fid       bf16 vs f32 sample statistics (FID), shipped checkpoint
  train_step          steps/s, FLOP/s vs measured matmul peak, memory
  train_step_imagenet       the same for both stages at the ImageNet-256
                            shapes (batch 2, float32; ~6 min on 2 cores)
  train_step_imagenet_bf16  stage 2 there in bfloat16, against the bf16 peak
  input_pipeline      images/s of the input pipeline (informational)
  inception           FID Inception images/s; against torch when
                      $MASKGIT_TORCH_PYTHON names an interpreter with torch
  release_sampler     the float32 sampler against the release's decode on
                      the same weights and key (tokens compared, time
                      ratio); only when $MASKGIT_RELEASE_PATH names a
                      checkout of google-research/maskgit (~8 min)
  demo                `make demo` from a fresh clone (~10 min): only with
                      --demo; otherwise the last measured figures are
                      reported, marked as not measured in this run.

On a CUDA machine (jax.devices()[0].platform == "gpu") the same commands run;
train_step then measures the card's bf16 matmul rate and reports model FLOP
utilisation against it.
"""
import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

from maskgit_jax.common import allocator
import bench_rows  # benchmarks/bench_rows.py
import timing  # benchmarks/timing.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable

# The last figures measured for `make demo` (README), used when --demo is
# not given and no earlier benchmarks/results/demo.json exists.
LAST_DEMO = {"wall_s": 636.0, "peak_rss_mb": 1.46e9 / 2**20,
             "commit": "1b9b073", "command": "make demo",
             "source": "the README's last measured figures (10 min 36 s, "
                       "1.46 GB; from a fresh clone, venv creation and "
                       "installs from a warm pip cache included)"}

def commands(quick: bool):
  """{name: (argv, results file)}."""
  r = 1 if quick else 3
  b = "benchmarks"
  out = lambda name: str(RESULTS / name)  # pylint: disable=unnecessary-lambda-assignment
  return {
      "sampler_embedded": (
          [f"{b}/sampler.py", "--shapes=embedded", "--batch=8",
           "--num_iter=8", f"--repeats={5 if quick else 30}",
           f"--out={out('sampler.json')}"], "sampler.json"),
      "sampler_imagenet": (
          [f"{b}/sampler.py", "--shapes=imagenet256", "--batches=2,8",
           "--floor", "--num_iter=8", f"--repeats={r}", "--sequential",
           "--sequential_batch=1", f"--sequential_repeats={1 if quick else 2}",
           f"--out={out('sampler_imagenet256.json')}"],
          "sampler_imagenet256.json"),
      "precision_fid": (
          [f"{b}/precision_fid.py", f"--num_samples={100 if quick else 200}",
           f"--out={out('precision_fid.json')}"], "precision_fid.json"),
      "train_step": (
          [f"{b}/train_step.py", f"--repeats={5 if quick else 20}",
           f"--out={out('train_step.json')}"], "train_step.json"),
      # Issue 14's train-step figures at the ImageNet-256 shapes (the
      # release's models, batch 2 on a CPU): both stages in float32, then
      # stage 2 in bfloat16 against the bf16 peak.
      "train_step_imagenet": (
          [f"{b}/train_step.py", "--config=configs/imagenet.py",
           "--stages=tokenizer,transformer", "--batch_size=2",
           "--token_cache", "--train_examples=1281167",
           f"--repeats={1 if quick else 3}",
           f"--out={out('train_step_imagenet256.json')}"],
          "train_step_imagenet256.json"),
      "train_step_imagenet_bf16": (
          [f"{b}/train_step.py", "--config=configs/imagenet.py",
           "--stages=transformer", "--transformer_dtype=bfloat16",
           "--batch_size=2", "--token_cache", "--train_examples=1281167",
           f"--repeats={2 if quick else 5}",
           f"--out={out('train_step_imagenet256_bf16_bench.json')}"],
          "train_step_imagenet256_bf16_bench.json"),
      "input_pipeline": (
          [f"{b}/input_pipeline.py", f"--batches={5 if quick else 30}",
           f"--output={out('input_pipeline.json')}"], "input_pipeline.json"),
      "inception": (
          [f"{b}/inception_throughput.py", "--batch_size=32",
           f"--num_batches={2 if quick else 5}",
           f"--json_out={out('inception_throughput.json')}"],
          "inception_throughput.json"),
      "release_sampler": (
          [f"{b}/release_sampler.py", "--batches=2,8", "--num_iter=8",
           f"--repeats={1 if quick else 3}",
           f"--out={out('release_sampler.json')}"], "release_sampler.json"),
      "demo": ([f"{b}/demo.py", f"--out={out('demo.json')}"], "demo.json"),
  }


def run(name, argv, log_dir):
  """Runs one benchmark; returns (exit code, seconds)."""
  start = time.perf_counter()
  log = log_dir / f"{name}.log"
  print(f"== {name}: {' '.join(argv)}", flush=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]))
  with open(log, "w") as f:
    proc = subprocess.run([PY] + argv, cwd=ROOT, stdout=f,
                          stderr=subprocess.STDOUT, env=env)
  seconds = time.perf_counter() - start
  tail = log.read_text()[-600:]
  print(tail if proc.returncode else "\n".join(tail.splitlines()[-3:]))
  print(f"== {name}: exit {proc.returncode} in {seconds:.0f} s", flush=True)
  return proc.returncode, seconds


def _load(name):
  path = RESULTS / name
  if not path.exists():
    return None
  with open(path) as f:
    return json.load(f)


def _mark_stale(rows, ran, report_only, files):
  """Rows of benchmarks not run by this invocation say so."""
  for row in rows:
    row["measured_in_this_run"] = (not report_only and row["source"] in ran
                                   and row["source"] != "demo") or (
                                       row["source"] == "demo" and
                                       "demo" in ran and not report_only)
    if not row["measured_in_this_run"] and row["source"] != "demo":
      row["how"] += (" [not re-run by this invocation: figures of an earlier "
                     f"run, benchmarks/results/{files[row['source']]}]")
  return rows


def markdown(report):
  lines = [
      "# Benchmarks", "",
      f"Generated {report['generated']} by `make bench` "
      f"(`benchmarks/run_all.py`) at commit {report['commit']}"
      f"{' (with uncommitted changes)' if report['dirty'] else ''}; device "
      f"{report['device']}, {report['cpu_count']} CPUs; load average "
      f"{report['load_average_start']} at start, {report['load_average_end']}"
      " at end (other jobs on the machine slow every figure; ratios are "
      "measured in the same run, interleaved).", "",
      "| metric | value | target | pass/fail | how measured |",
      "|---|---|---|---|---|"]
  for r in report["metrics"]:
    verdict = {True: "pass", False: "**FAIL**", None: "—"}[r["passed"]]
    how = r["how"].replace("|", "\\|")
    lines.append(f"| {r['metric']} | {r['value_text']} | {r['target_text']} "
                 f"| {verdict} | {how} |")
  failed = [r["metric"] for r in report["metrics"] if r["passed"] is False]
  lines += ["", f"Targets missed: {', '.join(failed) if failed else 'none'}."]
  if report.get("errors"):
    lines += ["", "Benchmarks that failed: " + ", ".join(
        f"{k} (exit {v})" for k, v in report["errors"].items()) +
              " (logs in benchmarks/results/logs/)."]
  return "\n".join(lines) + "\n"


def _git(*args):
  try:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--demo", action="store_true",
                      help="also time `make demo` from a fresh clone (~10 min)")
  parser.add_argument("--quick", action="store_true",
                      help="fewer repeats and samples (a smoke test)")
  parser.add_argument("--skip", default="", help="comma-separated names")
  parser.add_argument("--only", default="", help="comma-separated names")
  parser.add_argument("--report_only", action="store_true",
                      help="rebuild bench.json/bench.md from existing results")
  args = parser.parse_args()
  cmds = commands(args.quick)
  names = [n for n in cmds if n != "demo" or args.demo]
  if not os.environ.get("MASKGIT_RELEASE_PATH"):  # no release checkout
    names.remove("release_sampler")
  if args.only:
    names = [n for n in names if n in args.only.split(",")]
  names = [n for n in names if n not in args.skip.split(",")]
  RESULTS.mkdir(parents=True, exist_ok=True)
  log_dir = RESULTS / "logs"
  log_dir.mkdir(exist_ok=True)
  load_start = timing.load_average()
  start = time.perf_counter()
  errors, seconds = {}, {}
  if not args.report_only:
    for name in names:
      code, seconds[name] = run(name, cmds[name][0], log_dir)
      if code:
        errors[name] = code
  res = {name: _load(cmds[name][1]) for name in cmds}
  demo_measured = "demo" in names and "demo" not in errors
  if not demo_measured:
    previous = res.get("demo")
    if previous:
      previous = dict(previous, measured_in_this_run=False,
                      source=previous.get("source") or
                      "benchmarks/results/demo.json of an earlier run "
                      f"(commit {previous.get('commit')})")
    res["demo"] = previous or dict(LAST_DEMO, measured_in_this_run=False)
  import jax  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  report = {
      "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "commit": _git("rev-parse", "--short", "HEAD"),
      "allocator": allocator.current(),
      "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
      "device": f"{device.platform} ({device.device_kind})",
      "cpu_count": os.cpu_count(), "load_average_start": load_start,
      "load_average_end": timing.load_average(),
      "quick": args.quick, "ran": names if not args.report_only else [],
      "seconds": seconds, "total_s": time.perf_counter() - start,
      "errors": errors, "targets": bench_rows.TARGETS,
      "metrics": _mark_stale(bench_rows.build_rows(res, demo_measured), names,
                             args.report_only,
                             {k: v[1] for k, v in cmds.items()}),
      "demo_measured_in_this_run": demo_measured,
      "results": res,
  }
  with open(RESULTS / "bench.json", "w") as f:
    json.dump(report, f, indent=1, default=str)
  text = markdown(report)
  with open(RESULTS / "bench.md", "w") as f:
    f.write(text)
  print(text)
  print(f"wrote {RESULTS / 'bench.json'} and {RESULTS / 'bench.md'} "
        f"({report['total_s'] / 60:.1f} min)")
  return 1 if errors else 0


if __name__ == "__main__":
  allocator.maybe_reexec()  # as the entry points run
  sys.exit(main())
