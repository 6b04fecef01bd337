"""benchmarks/prepare.py and benchmarks/gpu_profile.py: what gpu.py uses to
fit its five minutes and to say where the device time goes, with fakes of
known answers (a GPU trace's layout, programs that fail to compile)."""
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] /
                       "benchmarks"))
import gpu_profile  # pylint: disable=g-import-not-at-top,wrong-import-position
import prepare  # pylint: disable=g-import-not-at-top,wrong-import-position


def _meta(pid, tid=None, process=None, thread=None):
  if thread is None:
    return {"ph": "M", "pid": pid, "name": "process_name",
            "args": {"name": process}}
  return {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name",
          "args": {"name": thread}}


def _x(pid, tid, name, dur):
  return {"ph": "X", "pid": pid, "tid": tid, "name": name, "dur": dur}


GPU_TRACE = [
    _meta(1, process="/host:CPU"), _meta(1, 10, thread="python"),
    _meta(2, process="/device:GPU:0 NVIDIA H200"),
    _meta(2, 20, thread="XLA Ops"), _meta(2, 21, thread="Stream #13"),
    _x(1, 10, "fusion.1", 999),  # a host event of the same name: not counted
    _x(2, 20, "fusion.1", 30), _x(2, 20, "fusion.1", 10),
    _x(2, 20, "custom-call.2", 50),
    _x(2, 21, "sm90_xmma_gemm_bf16", 45),  # the kernel behind custom-call.2
]


def test_gpu_operations_come_from_the_devices_xla_ops_thread():
  totals, where = gpu_profile.device_op_durations(GPU_TRACE)
  assert dict(totals) == {"fusion.1": 40, "custom-call.2": 50}
  assert where == "device 'XLA Ops' threads"


def test_without_an_ops_thread_the_device_streams_count():
  trace = [e for e in GPU_TRACE if e.get("tid") != 20]
  totals, where = gpu_profile.device_op_durations(trace)
  assert dict(totals) == {"sm90_xmma_gemm_bf16": 45}
  assert where.startswith("device threads")


def test_a_cpu_trace_falls_back_to_the_hosts_operations():
  trace = [_meta(1, process="/host:CPU"), _meta(1, 10, thread="tf_XLA"),
           _x(1, 10, "ynn_fusion.3", 7), _x(1, 10, "$python frame", 100)]
  totals, where = gpu_profile.device_op_durations(trace)
  assert dict(totals) == {"ynn_fusion.3": 7}
  assert where == "host XLA operations"


def test_thread_totals_rank_the_busiest_threads():
  rows = gpu_profile.thread_totals(GPU_TRACE, top=2)
  assert [(r["process"], r["thread"], r["us"]) for r in rows] == [
      ("/host:CPU", "python", 999), ("/device:GPU:0 NVIDIA H200", "XLA Ops",
                                     90)]


def test_gpu_kernels_are_grouped_and_named_by_their_hlo():
  totals = {"loop_add_fusion_23": 5, "loop_add_fusion_7": 2, "fusion.3": 1,
            "fusion.4": 1, "sm90_xmma_gemm": 9}
  assert dict(gpu_profile.categories(totals)) == {
      "loop_add_fusion": 7, "fusion": 2, "sm90_xmma_gemm": 9}
  info = {"loop_add_fusion.23": ("f32[8]", "jit(step)/add"),
          "fusion.3": ("bf16[2]", "jit(step)/mul")}
  assert gpu_profile.hlo_of(info, "loop_add_fusion_23") == (
      "f32[8]", "jit(step)/add")
  assert gpu_profile.hlo_of(info, "fusion.3") == ("bf16[2]", "jit(step)/mul")
  assert gpu_profile.hlo_of(info, "sm90_xmma_gemm") == ("", "")


def test_a_profiler_failure_is_an_error_entry_not_a_crash():
  def boom():
    raise RuntimeError("no CUPTI")
  out = gpu_profile.safe_profile(boom, calls=1)
  assert out == {"error": "RuntimeError: no CUPTI"}


class _Lowered:
  """Fails to compile `fails` times, then returns `value`."""

  def __init__(self, value, fails=0, text=None):
    self.value, self.fails, self.calls = value, fails, 0
    self.text = f"program {value}" if text is None else text

  def as_text(self):
    return self.text

  def compile(self):
    self.calls += 1
    if self.calls <= self.fails:
      raise NotImplementedError(f"refused ({self.calls})")
    return self.value


def test_compile_all_compiles_every_program_and_retries_alone():
  programs = {"a": _Lowered(1), "b": _Lowered(2, fails=1),
              "c": _Lowered(3, fails=5)}
  compiled, seconds, errors = prepare.compile_all(programs, workers=3)
  assert compiled == {"a": 1, "b": 2}  # b: failed on the pool, then alone
  assert errors == {"c": "NotImplementedError: refused (2)"}
  assert programs["b"].calls == 2 and programs["c"].calls == 2
  assert set(seconds) == {"a", "b", "c"}


def test_identical_programs_are_compiled_once_and_shared():
  programs = {"f32/detokenize": _Lowered(1, text="decoder"),
              "bf16/detokenize": _Lowered(2, text="decoder"),
              "bf16/forward": _Lowered(3)}
  compiled, seconds, errors = prepare.compile_all(programs)
  assert not errors
  assert compiled == {"f32/detokenize": 1, "bf16/detokenize": 1,
                      "bf16/forward": 3}
  assert programs["bf16/detokenize"].calls == 0
  assert seconds["bf16/detokenize"] == 0.0


def test_compile_all_matches_the_plain_compile():
  f = jax.jit(lambda x: jnp.sin(x) * 2)
  x = jnp.arange(4.0)
  compiled, _, errors = prepare.compile_all({"f": f.lower(x),
                                             "g": f.lower(x + 1)})
  assert not errors
  np.testing.assert_array_equal(compiled["f"](x), f(x))


def test_on_host_gives_the_jitted_values():
  init = lambda r: jax.random.normal(r, (3, 2))  # pylint: disable=unnecessary-lambda-assignment
  key = jax.random.PRNGKey(1)
  out = prepare.on_host(init, key)
  np.testing.assert_array_equal(out, jax.jit(init)(key))
  assert out.devices() == {jax.devices()[0]}


def test_host_hlo_flops_counts_the_unoptimised_program():
  """2 m n k for a matmul, from shapes alone (what gpu.py's stage-1 MFU
  counts when XLA:GPU's lowered program reports no FLOPs)."""
  a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
  assert prepare.host_hlo_flops(jnp.matmul, a, b) == 2 * 8 * 16 * 4
  assert prepare.host_hlo_flops(
      lambda t: t["x"] @ t["y"], {"x": a, "y": b}) == 2 * 8 * 16 * 4


def test_a_refused_fused_sampler_is_an_error_entry(monkeypatch, tmp_path):
  """gpu_sampler.run_sampler: when cuDNN refuses the fused sampler the
  other samplers keep their figures and the fused entry names the error;
  a sampler not asked for is left to the report (kept from its run)."""
  import gpu_report  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import gpu_sampler  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  refused = "NotImplementedError: Unsupported sequence length"
  monkeypatch.setattr(
      gpu_sampler, "sampler_entries",
      lambda args, peaks, profile, names: (
          {"sampler_float32": (10.0, {"unit": "images/s"})},
          {"bfloat16_fused": refused}))
  report = gpu_report.Report(str(tmp_path / "gpu.json"), {"tiny": True})
  gpu_sampler.run_sampler(report, None, {}, float("inf"), None,
                          ["sampler_float32", "sampler_bfloat16_fused"])
  m = report.data["measurements"]
  assert m["sampler_float32"]["value"] == 10.0
  assert m["sampler_float32"]["error"] is None
  assert m["sampler_bfloat16_fused"]["value"] is None
  assert m["sampler_bfloat16_fused"]["error"] == refused
  assert m["sampler_bfloat16"]["error"] == gpu_report.NOT_FINISHED
