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

TARGETS = {
    "overhead": 1.05, "bf16_speedup": 1.8, "parallel_speedup": 25.0,
    "fid_ratio": 1.1, "sampler_floor": 1.25, "demo_wall_s": 15 * 60, "demo_rss_mb": 2048.0,
}


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


def _row(metric, value, unit, target, how, higher_is_better=False,
         fmt="{:.3g}"):
  if value is None:
    passed, text = None, "not measured"
  else:
    text = fmt.format(value) + (f" {unit}" if unit else "")
    if target is None:
      passed = None
    else:
      passed = bool(value >= target if higher_is_better else value <= target)
  target_text = ("—" if target is None else
                 ("≥ " if higher_is_better else "≤ ") + fmt.format(target) +
                 (f" {unit}" if unit else ""))
  return {"metric": metric, "value": value, "unit": unit, "value_text": text,
          "target": target, "target_text": target_text,
          "higher_is_better": higher_is_better, "passed": passed, "how": how}


def _cpu_text(result):
  if "cpu_per_wall" not in result:
    return ""
  return (f"; process CPU/wall {result['cpu_per_wall']:.2f} (of "
          f"{os.cpu_count()} cores)")


# Issue 14's train-step targets, against the peak of the precision the step
# computes in, at the embedded default's and at the ImageNet-256 shapes.
STEP_TARGETS = {"tokenizer": 0.35, "transformer": 0.50}


def _largest_batch(result):
  """The sampler benchmark's row of the largest batch."""
  return max(result["results"], key=lambda x: x["batch"])


def _train_step_rows(rows, ts, shape_text, label):
  """Utilisation, steps/s and compiled memory of each stage in `ts` (a
  benchmarks/train_step.py report)."""
  for stage, title in (("tokenizer", "Stage 1 (tokenizer)"),
                       ("transformer", "Stage 2 (transformer)")):
    s = ts["stages"].get(stage)
    if not s:
      continue
    ref = s.get("utilisation_reference", ts["utilisation_reference"])
    title = f"{title}{label}, {s['dtype']}" if label else title
    how = (f"{shape_text}, batch {s['batch_size']}, {s['dtype']}, "
           f"median of {s['repeats']} steps: {s['steps_per_s']:.3g} "
           f"steps/s, {s['flops_per_step'] / 1e9:.4g} GFLOP/step (XLA cost "
           "analysis of the compiled step: fwd + bwd + optimizer")
    if "analytic" in s:
      a = s["analytic"]
      how += (f"; analytic {a['formula']} = "
              f"{a['flops_per_step'] / 1e9:.4g} GFLOP, N={a['N']}, "
              f"B={a['B']}, S={a['S']}, L={a['L']}, d={a['d']}")
    how += (f") / step time, vs the {ref} matmul rate timed in turn "
            "with each step (median over rounds); "
            f"{s['achieved_flops_per_s'] / 1e9:.0f} GFLOP/s")
    if "utilisation_vs_best_peak" in s:
      how += (f"; {s['utilisation_vs_best_peak']:.1%} of the best-of-sizes "
              "peak measured after the steps")
    rows.append(_row(f"{title} train step: FLOP utilisation",
                     s["utilisation"], "", STEP_TARGETS[stage], how,
                     higher_is_better=True, fmt="{:.1%}"))
    rows.append(_row(f"{title} train step: steps/s", s["steps_per_s"], "",
                     None, f"batch {s['batch_size']}, median of "
                     f"{s['repeats']} steps", fmt="{:.3g}"))
    mem = s.get("compiled_memory") or {}
    if mem:
      rows.append(_row(
          f"{title} train step: compiled memory", mem[
              "peak_estimate_bytes"] / 2**20, "MiB", None,
          "XLA memory analysis of the compiled step: arguments "
          f"{mem.get('argument_size_in_bytes', 0) / 2**20:.0f} + outputs "
          f"{mem.get('output_size_in_bytes', 0) / 2**20:.0f} - aliased "
          f"{mem.get('alias_size_in_bytes', 0) / 2**20:.0f} + temporaries "
          f"{mem.get('temp_size_in_bytes', 0) / 2**20:.0f} MiB",
          fmt="{:.0f}"))


def build_rows(res, demo_measured):
  rows = []
  se = res.get("sampler_embedded")
  si = res.get("sampler_imagenet")
  t = TARGETS

  def overhead_rows(r, label, shape_text):
    if not r:
      rows.append(_row(f"Sampler overhead, {label}", None, "", t["overhead"],
                       "benchmark failed or skipped"))
      return
    x = _largest_batch(r)
    for mode, short in (("float32", "f32"), ("bfloat16", "bf16")):
      m = x[mode]
      rows.append(_row(
          f"Sampler overhead, {label}, {short}", m["overhead"], "",
          t["overhead"],
          f"{shape_text}, batch {x['batch']}, T={x['num_iter']}: "
          f"time(decode+detokenize, one jit) {m['sample_s']:.4g} s / "
          f"({x['num_iter']} x forward {m['forward_s']:.4g} s + detokenize "
          f"{m['detokenize_s']:.4g} s); medians of {x.get('repeats', '?')} interleaved "
          f"rounds, random weights{_cpu_text(x)}", fmt="{:.3f}"))

  overhead_rows(se, "embedded", "Fashion-MNIST config, 8x8 tokens")
  _tag(rows, "sampler_embedded")
  overhead_rows(si, "ImageNet-256",
                "Transformer 256 + tokenizer 'imagenet', 16x16 tokens, "
                "codebook 1024")
  if si:
    x = _largest_batch(si)
    fm = x.get("fast_mode", {"transformer_dtype": "bfloat16",
                             "tokenizer_dtype": "float32"})
    rows.append(_row(
        "bf16 sampler speed-up vs f32, ImageNet-256", x["bf16_speedup"], "x",
        t["bf16_speedup"],
        f"time(f32 sampler) / time(bf16 sampler), decode + detokenize, batch "
        f"{x['batch']}, T={x['num_iter']}, same run, interleaved; fast mode = "
        f"transformer {fm['transformer_dtype']} (bf16 matmul inputs, f32 "
        f"accumulation, f32 LayerNorm/softmax/logits), tokenizer "
        f"{fm['tokenizer_dtype']}. Parts: transformer forward "
        f"{x['float32']['forward_s'] / x['bfloat16']['forward_s']:.2f}x, "
        f"detokenize {x['float32']['detokenize_s'] / x['bfloat16']['detokenize_s']:.2f}x"
        f"{_cpu_text(x)}",
        higher_is_better=True, fmt="{:.2f}"))
  for x in (si or {}).get("results", []):
    f = x.get("bf16_floor")
    if not f:
      continue
    rows.append(_row(
        f"bf16 sampler vs its floor, ImageNet-256, batch {x['batch']}",
        f["decode_over_forwards_floor"], "x", t["sampler_floor"],
        f"(time(bf16 decode + detokenize) {x['bfloat16']['sample_s']:.3g} s "
        f"- detokenize {x['bfloat16']['detokenize_s']:.3g} s) / "
        f"({x['num_iter']} x 2 x {x['transformer_params'] / 1e6:.1f}M "
        f"parameters x {x['tokens_per_forward']} tokens at the bf16 matmul "
        f"peak {f['matmul_peak_bf16'] / 1e9:.0f} GFLOP/s = "
        f"{f['forwards_floor_s']:.3g} s), the peak the higher of two "
        "measured before and after the samplers in the same run",
        fmt="{:.2f}"))
  _tag(rows, "sampler_imagenet")
  pf = res.get("precision_fid")
  if pf:
    real = pf.get("fid_vs_real") or {}
    real_text = ""
    if real:
      real_text = (f"; vs {real['reference_images']} real images: f32 "
                   f"{real['float32 seed 0']:.1f}/{real['float32 seed 1']:.1f},"
                   f" bf16 {real['bfloat16 seed 2']:.1f}/"
                   f"{real['bfloat16 seed 3']:.1f}, real-vs-real floor "
                   f"{real['real_vs_real_floor']:.1f}")
    rows.append(_row(
        "bf16 samples' statistics: FID(bf16, f32) / FID(f32, f32)",
        pf["ratio_cross_to_floor"], "", pf["tolerance"],
        f"shipped Fashion-MNIST checkpoint (trained; random weights would "
        f"say nothing), {pf['num_samples']} class-balanced samples per set, "
        f"FID Inception features: mean FID over bf16 seeds 2,3 x f32 seeds "
        f"0,1 = {pf['fid_cross_mean']:.2f} vs floor FID(f32 seed 0, f32 seed "
        f"1) = {pf['fid_floor_f32_vs_f32']:.2f}; FID(bf16 2, bf16 3) = "
        f"{pf['fid_bf16_vs_bf16']:.2f}; same seed: "
        f"{pf['same_seed_token_agreement']:.1%} of tokens equal{real_text}",
        fmt="{:.3f}"))
  _tag(rows, "precision_fid")
  if si and si.get("sequential"):
    q = si["sequential"]
    rows.append(_row(
        "Parallel vs sequential decoding, ImageNet-256", q["parallel_speedup"],
        "x", t["parallel_speedup"],
        f"time({q['sequential_iterations']} iterations, one token each: "
        f"{q['sequential_s']:.1f} s) / time({q['parallel_iterations']} "
        f"iterations, cosine: {q['parallel_s']:.2f} s), token decoding only, "
        f"{q['dtype']}, batch {q['batch']}, same run, median of "
        f"{q['repeats']} interleaved rounds{_cpu_text(q)}",
        higher_is_better=True,
        fmt="{:.1f}"))
  _tag(rows, "sampler_imagenet")
  ts = res.get("train_step")
  if ts:
    ref = ts["utilisation_reference"]
    peak = ts["matmul_peak_bf16"] if ref == "bfloat16" else ts[
        "matmul_peak_f32"]
    peaks = (f"f32 {ts['matmul_peak_f32'] / 1e9:.0f}, " if
             ts["matmul_peak_f32"] else "") + (
                 f"bf16 {ts['matmul_peak_bf16'] / 1e9:.0f} GFLOP/s")
    rows.append(_row(
        "Matmul peak (this machine, this run)", peak / 1e9, "GFLOP/s", None,
        f"{ts['peak_method']}: {peaks}", fmt="{:.0f}"))
    _train_step_rows(rows, ts, "embedded config", "")
    rows.append(_row(
        "Train-step benchmark: process peak RSS", ts["peak_rss_mb"], "MiB",
        None, f"getrusage max RSS of the benchmark process (both stages, "
        f"{ts['stages']['tokenizer']['peak_rss_mb_after']:.0f} MiB after stage "
        "1)", fmt="{:.0f}"))
  _tag(rows, "train_step")
  for name in ("train_step_imagenet", "train_step_imagenet_bf16"):
    if res.get(name):
      _train_step_rows(rows, res[name], "ImageNet-256 config (the release's "
                       "models), from the token cache", ", ImageNet-256")
    _tag(rows, name)
  demo = res.get("demo")
  if demo:
    if demo_measured and demo.get("measured_in_this_run"):
      how = (f"`{demo.get('command', 'make demo')}` from a fresh git clone "
             f"(commit {demo.get('commit')}), this checkout's venv reused "
             "(make setup not included); measured in this run")
    else:
      how = ("NOT measured in this run (run `make bench BENCH_ARGS=--demo`): "
             f"{demo.get('source', 'an earlier run')}")
    rows.append(_row("make demo: wall time", demo["wall_s"] / 60, "min",
                     t["demo_wall_s"] / 60, how, fmt="{:.1f}"))
    rows.append(_row("make demo: peak RSS", demo["peak_rss_mb"], "MiB",
                     t["demo_rss_mb"],
                     how + (f"; {demo['peak_rss_method']}"
                            if "peak_rss_method" in demo else ""),
                     fmt="{:.0f}"))
  _tag(rows, "demo")
  ip = res.get("input_pipeline")
  if ip:
    for row in ip["rows"]:
      if row["case"] == "fashion_mnist train 32x32x3" and row.get("defaults"):
        rows.append(_row("Input pipeline, Fashion-MNIST train (demo)",
                         row["images_per_s"], "images/s", None,
                         "batch 128, augmentation, default threads",
                         fmt="{:.0f}"))
      if row["case"].startswith("folder train") and row.get("defaults"):
        rows.append(_row("Input pipeline, 256x256 JPEG folder train",
                         row["images_per_s"], "images/s", None,
                         "batch 128, random resized crop + flip, default "
                         "threads", fmt="{:.0f}"))
  _tag(rows, "input_pipeline")
  inc = res.get("inception")
  if inc:
    rows.append(_row("FID Inception feature throughput", inc["images_per_s"],
                     "images/s", None,
                     f"batch {inc['batch_size']}, {inc['input_size']}px "
                     f"resized to {inc['resized_to']}, weights "
                     f"{inc['weights']}", fmt="{:.1f}"))
    sbs = inc.get("network_side_by_side") or {}
    if "jax_over_torch" in sbs:
      ips = sbs["images_per_s"]
      rows.append(_row(
          "FID Inception network vs the TorchScript network run by torch",
          sbs["jax_over_torch"], "x", 1.0,
          f"batch {sbs['batch_size']} at 299x299, {sbs['repeats']} "
          f"interleaved rounds: {ips['jax_matmul']} images/s against torch "
          f"{sbs['torch']['torch_version']}'s {ips['torch']} (XLA "
          f"convolutions: {ips['jax_xla']}); features differ by "
          f"{sbs['max_abs_diff_vs_torch']:.1e}", higher_is_better=True,
          fmt="{:.2f}"))
  _tag(rows, "inception")
  return rows


def _tag(rows, source):
  for row in rows:
    row.setdefault("source", source)


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
      "errors": errors, "targets": TARGETS,
      "metrics": _mark_stale(build_rows(res, demo_measured), names,
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
