"""Where a compiled program's device time goes, for benchmarks/gpu.py: a
`jax.profiler` trace of a few calls, read back from its Perfetto file
(profile_step.py's reader; no TensorBoard or xprof needed).

On a GPU the trace has one process per device (`/device:GPU:0 ...`) with
an "XLA Ops" thread (one event per HLO operation) beside the CUDA stream
threads (one event per kernel); the operations are summed from "XLA Ops"
(the streams' kernels as well, separately, when the operations thread is
missing). On a CPU (the --tiny test) there is no device process and the
host's XLA events are summed instead. Every (process, thread) total is
kept too, so that a trace laid out otherwise still says where time went.
"""
import collections
import re
import shutil
import tempfile

import jax

from gpu_report import error_text  # benchmarks/gpu_report.py
import profile_step  # benchmarks/profile_step.py


def _names(events):
  """({pid: process name}, {(pid, tid): thread name}) from the metadata."""
  procs, threads = {}, {}
  for e in events:
    if e.get("ph") != "M":
      continue
    name = (e.get("args") or {}).get("name", "")
    if e.get("name") == "process_name":
      procs[e.get("pid")] = name
    elif e.get("name") == "thread_name":
      threads[(e.get("pid"), e.get("tid"))] = name
  return procs, threads


def device_op_durations(events):
  """({op name: total us}, where): the device's operations when the trace
  has a device process, else the host's XLA operations (profile_step)."""
  procs, threads = _names(events)
  devices = {p for p, n in procs.items()
             if n.startswith("/device:") and "CPU" not in n}
  if not devices:
    return profile_step.op_durations(events), "host XLA operations"
  ops = {k for k, n in threads.items() if k[0] in devices and
         n.strip().lower() == "xla ops"}
  where = "device 'XLA Ops' threads"
  if not ops:
    ops = {k for k in threads if k[0] in devices}
    where = "device threads (no 'XLA Ops' thread)"
  totals = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and (e.get("pid"), e.get("tid")) in ops:
      totals[e["name"]] += e.get("dur", 0)
  return totals, where


def thread_totals(events, top=12):
  """[{process, thread, us, events}] of the busiest (process, thread)s."""
  procs, threads = _names(events)
  us, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X":
      key = (e.get("pid"), e.get("tid"))
      us[key] += e.get("dur", 0)
      count[key] += 1
  return [{"process": procs.get(k[0], str(k[0])),
           "thread": threads.get(k, str(k[1])), "us": v, "events": count[k]}
          for k, v in us.most_common(top)]


def profile(fn, calls=3, hlo_text="", top=25):
  """Traces `calls` calls of `fn` (already compiled and warm) and returns
  {ms_per_call, categories_ms, top: [{op, ms, shape, source}], where,
  threads}: per call, operations summed over the trace's device(s)."""
  directory = tempfile.mkdtemp(prefix="gpu_profile_")
  try:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      for _ in range(calls):
        jax.block_until_ready(fn())
    events = profile_step.read_trace(directory)
  finally:
    shutil.rmtree(directory, ignore_errors=True)
  totals, where = device_op_durations(events)
  info = profile_step.hlo_info(hlo_text) if hlo_text else {}
  per_call = 1e-3 / calls  # microseconds summed -> ms per call
  cats = categories(totals)
  rows = []
  for name, dur in totals.most_common(top):
    shape, source = hlo_of(info, name)
    rows.append({"op": name, "ms": dur * per_call, "shape": shape[:80],
                 "source": source[-120:]})
  return {
      "calls": calls, "where": where,
      "ms_per_call": sum(totals.values()) * per_call,
      "categories_ms": {k: v * per_call for k, v in cats.most_common(top)},
      "top": rows, "threads": thread_totals(events)}


def categories(totals):
  """Totals grouped by name without its number: `fusion.12` (an HLO
  operation) and `loop_add_fusion_23` (XLA:GPU's kernel of
  `loop_add_fusion.23`) alike."""
  grouped = collections.Counter()
  for name, dur in totals.items():
    grouped[re.sub(r"[._]\d+$", "", name)] += dur
  return grouped


def hlo_of(info, name):
  """(shape, JAX source) of an operation or of XLA:GPU's kernel for it
  (the HLO name with its last `.` written `_`); ("", "") for a library
  kernel (cuBLAS, cuDNN)."""
  for candidate in (name, re.sub(r"_(\d+)$", r".\1", name)):
    if candidate in info:
      return info[candidate]
  return "", ""


def safe_profile(fn, **kwargs):
  """profile(), or {"error": ...}: a profiler failure never costs the
  measurement it annotates."""
  try:
    return profile(fn, **kwargs)
  except (Exception, SystemExit) as e:  # pylint: disable=broad-except
    return {"error": error_text(e, 400)}
