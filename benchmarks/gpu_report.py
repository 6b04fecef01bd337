"""benchmarks/gpu.py's report: the measurement names and targets, the JSON
file rewritten after every change, and running one measurement or batch
attempt so that a failure or a timeout leaves an explicit entry."""
import gc
import json
import time
import traceback

import jax

from maskgit_jax.common import files

NAMES = ("matmul_peak", "sampler_float32", "sampler_bfloat16",
         "sampler_bfloat16_fused", "stage2_train", "stage1_train",
         "stage2_train_fused", "peak_memory")
SAMPLERS = ("sampler_float32", "sampler_bfloat16", "sampler_bfloat16_fused")
TARGETS = {"sampler_float32": {"mfu": 0.40}, "sampler_bfloat16": {"mfu": 0.40},
           "sampler_bfloat16_fused": {"mfu": 0.40},
           "stage2_train": {"mfu": 0.45}, "stage2_train_fused": {"mfu": 0.45}}
NOT_FINISHED = ("not finished: the run ended (wall-clock timeout or crash) "
                "before this measurement completed")


def is_oom(e: BaseException) -> bool:
  text = f"{type(e).__name__}: {e}"
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or (
      "out of memory" in text)


def error_text(e: BaseException, limit: int = 600) -> str:
  text = f"{type(e).__name__}: {e}".strip()
  return text if len(text) <= limit else text[:limit] + " ..."


def memory_stats():
  """jax's device memory_stats() ({} where the backend has none)."""
  try:
    return jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    return {}


def peak_bytes():
  return memory_stats().get("peak_bytes_in_use")


def free_memory():
  gc.collect()
  jax.clear_caches()
  gc.collect()


class Report:
  """The JSON file, rewritten atomically after every change."""

  def __init__(self, path, header, keep=()):
    """keep: measurements not run now, copied from the existing file at
    `path` (each tagged with the run it came from) or marked not run."""
    self.path = path
    self.data = dict(header)
    self.data["measurements"] = {
        name: {"value": None, "error": NOT_FINISHED,
               **({"target": TARGETS[name]} if name in TARGETS else {})}
        for name in NAMES}
    old = previous_run(path, header.get("tiny")) if keep else None
    for name in keep:
      entry = (old or {}).get("measurements", {}).get(name)
      if entry is None:
        self.data["measurements"][name] = {
            "value": None, "error": "not run this time (see --all, --only) "
                                    "and not in the previous file"}
      elif "from_run" in entry:  # kept before: it keeps its own run's tag
        self.data["measurements"][name] = dict(entry)
      else:
        self.data["measurements"][name] = dict(
            entry, from_run={k: old.get(k) for k in
                             ("started", "command", "jax_version",
                              "device_kind", "wall_s")})
    self.write()

  def set(self, name, value=None, error=None, **fields):
    entry = self.data["measurements"][name]
    entry.update(fields)
    entry["value"] = value
    entry["error"] = error if value is None else None
    if value is None and error is None:
      entry["error"] = "no value (no error was raised)"
    if name in TARGETS and value is not None:
      entry["target_met"] = {k: (entry.get(k) is not None and
                                 entry[k] >= threshold)
                             for k, threshold in TARGETS[name].items()}
    self.write()

  def write(self):
    self.data["wall_s"] = time.perf_counter() - START
    files.write_text(self.path, json.dumps(self.data, indent=1, default=str))


START = time.perf_counter()


def previous_run(path, tiny):
  """The earlier run at `path` (a dict) if it had the same sizes (--tiny or
  not), else None."""
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError):
    return None
  return old if bool(old.get("tiny")) == bool(tiny) else None


def measure(report, name, fn, deadline):
  """Runs fn() -> (value, fields) into report[name]; errors are recorded."""
  left = deadline - time.perf_counter()
  if left < 5:
    report.set(name, error=f"skipped: the time budget ran out ({left:.0f} s "
                           "left)")
    return
  t0 = time.perf_counter()
  try:
    value, fields = fn()
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    value, fields = None, {"error": error_text(e)}
  fields.setdefault("error", None)
  error = fields.pop("error")
  fields["wall_s"] = time.perf_counter() - t0
  fields["peak_bytes_in_use_so_far"] = peak_bytes()
  report.set(name, value=value, error=error, **fields)
  state = "ok" if value is not None else f"error: {error}"
  print(f"[{time.perf_counter() - START:6.1f} s] {name}: "
        f"{value if value is not None else ''} ({state[:200]})", flush=True)
  free_memory()


def largest_fitting(batches, attempt, deadline, min_left):
  """Tries attempt(batch) for each batch in order; returns (batch, result,
  tried) for the first that does not run out of memory. Other errors are
  raised; (None, None, tried) when none fits or the time ran out."""
  tried = []
  for b in batches:
    left = deadline - time.perf_counter()
    if left < min_left:
      tried.append({"batch": b, "skipped": f"time budget ({left:.0f} s left)"})
      break
    t0 = time.perf_counter()
    try:
      result = attempt(b)
    except Exception as e:  # pylint: disable=broad-except
      if not is_oom(e):
        raise
      tried.append({"batch": b, "out_of_memory": error_text(e, 300),
                    "wall_s": time.perf_counter() - t0})
      print(f"  batch {b}: out of memory, trying a smaller one", flush=True)
      free_memory()
      continue
    tried.append({"batch": b, "fits": True,
                  "wall_s": time.perf_counter() - t0})
    return b, result, tried
  return None, None, tried


def no_batch_error(batches, tried):
  if tried and "skipped" in tried[-1]:
    return (f"the time budget ran out before a batch of {batches} ran "
            f"({tried[-1]['skipped']})")
  return f"no batch of {batches} fitted in memory"
