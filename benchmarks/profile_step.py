r"""Where a train step's time goes: a `jax.profiler` trace, read back per op.

  python benchmarks/profile_step.py --stages=transformer
  python benchmarks/profile_step.py --stages=tokenizer --top=30 \
      --out=benchmarks/results/profile_tokenizer.json

Builds the same compiled step as `benchmarks/train_step.py` (the project's
own `Task.train_step` of the config, data parallel over the config's CPU
devices, random inputs), runs `--steps` of it inside `jax.profiler.trace`
with a Perfetto trace, and sums the duration of every XLA operation
(fusion, matmul, collective) over the traced steps, from the trace file
itself: no TensorBoard or xprof needed. Each operation is named with its
shape and the JAX source op from the compiled HLO's metadata. Printed per
step, summed over devices (the device threads share the cores):

  - the categories (`ynn_fusion`: XLA:CPU's YNNPACK matmuls and
    convolutions; `all-reduce`: the gradient collectives, including the
    time a device waits there for the other; loop fusions by their name);
  - the `--top` operations.

On a CPU, XLA:CPU traces its operations only with
`--xla_cpu_enable_xprof_traceme=true`, which this script adds to XLA_FLAGS
before JAX starts. The durations are wall time of each operation on its
thread: on a shared machine they move with the load, so compare shares
within one run.
"""
import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile

TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"
# Trace events that are not one XLA operation (runtime, Python, waits).
_NOT_OPS = ("ThunkExecutor", "$", "PjitFunction", "CommonPjRt", "Wait",
            "Rendezvous", "[", "ParseArguments", "Handle inputs", "end: ")


def op_durations(trace_events):
  """{operation name: total microseconds} of the complete ('X') events that
  are XLA operations."""
  totals = collections.Counter()
  for event in trace_events:
    if event.get("ph") == "X" and not event["name"].startswith(_NOT_OPS):
      totals[event["name"]] += event.get("dur", 0)
  return totals


def categories(totals):
  """Operation totals grouped by name without its `.N` suffix."""
  grouped = collections.Counter()
  for name, dur in totals.items():
    grouped[re.sub(r"\.\d+$", "", name)] += dur
  return grouped


def hlo_info(hlo_text):
  """{instruction name: (shape, source op)} from compiled HLO text."""
  info = {}
  for m in re.finditer(r"^\s+%(\S+) = (\S+) [^\n]*", hlo_text, re.M):
    op = re.search(r'op_name="([^"]*)"', m.group(0))
    info[m.group(1)] = (m.group(2), op.group(1) if op else "")
  return info


def read_trace(directory):
  """The trace events of the Perfetto trace written under `directory`."""
  found = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"),
                    recursive=True)
  if not found:
    raise SystemExit(f"error: no Perfetto trace under {directory}.")
  with gzip.open(found[0]) as f:
    trace = json.load(f)
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def main():
  if TRACE_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " +
                               TRACE_FLAG).strip()
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import jax  # pylint: disable=import-outside-toplevel
  import train_step  # pylint: disable=import-outside-toplevel

  parser = train_step.build_parser(__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=5,
                      help="traced steps (after 3 untraced warm-up steps)")
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--out", default="",
                      help="also write the figures as JSON here")
  args = parser.parse_args()
  config, sections = train_step.configure(args)
  report = {"num_devices": len(jax.devices()), "steps": args.steps,
            "stages": {}}
  for stage in args.stages.split(","):
    task, batch, frozen = train_step.make_stage(config, stage, sections[stage])
    one, flops, compiled, _ = train_step.compile_step(task, batch, frozen)
    for _ in range(3):
      jax.block_until_ready(one())
    directory = tempfile.mkdtemp(prefix="profile_step_")
    try:
      with jax.profiler.trace(directory, create_perfetto_trace=True):
        for _ in range(args.steps):
          jax.block_until_ready(one())
      totals = op_durations(read_trace(directory))
    finally:
      shutil.rmtree(directory, ignore_errors=True)
    info = hlo_info(compiled.as_text())
    per_step = 1e-3 / args.steps  # microseconds summed -> ms per step
    total = sum(totals.values()) * per_step
    cats = categories(totals)
    top = [{"op": name, "ms": dur * per_step,
            "shape": info.get(name, ("", ""))[0],
            "source": info.get(name, ("", ""))[1]}
           for name, dur in totals.most_common(args.top)]
    report["stages"][stage] = {
        "flops_per_step": flops, "ops_ms_per_step": total,
        "categories_ms": {k: v * per_step for k, v in cats.most_common()},
        "top": top}
    print(f"== {stage}: {total:.1f} ms of operations per step, summed over "
          f"{len(jax.devices())} device(s)")
    for name, dur in cats.most_common(12):
      print(f"  {dur * per_step:8.2f} ms  {100 * dur * per_step / total:5.1f}%"
            f"  {name}")
    print("  -- top operations")
    for row in top:
      print(f"  {row['ms']:8.2f} ms  {row['op'][:24]:24s} "
            f"{row['shape'][:28]:28s} {row['source'][-70:]}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  from maskgit_jax.common import allocator  # pylint: disable=g-import-not-at-top
  allocator.maybe_reexec()  # as the entry points run
  main()
