"""benchmarks/profile_step.py: per-operation times read back from a trace.

Fake trace events and HLO text with known answers, and one real traced step
of a fake task (XLA:CPU's operations appear in the trace once the trace flag
is set, which the test's subprocess does as the script does).
"""
import pathlib
import subprocess
import sys
import textwrap

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] /
                       "benchmarks"))
import profile_step  # pylint: disable=wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_operation_totals_skip_runtime_events_and_group_by_name():
  events = [
      {"ph": "X", "name": "ynn_fusion.3", "dur": 10},
      {"ph": "X", "name": "ynn_fusion.3", "dur": 5},
      {"ph": "X", "name": "ynn_fusion.12", "dur": 7},
      {"ph": "X", "name": "all-reduce.78", "dur": 4},
      {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 100},
      {"ph": "X", "name": "$profiler.py:307 trace", "dur": 100},
      {"ph": "X", "name": "Rendezvous", "dur": 100},
      {"ph": "M", "name": "thread_name"},
      {"ph": "i", "name": "ynn_fusion.3"},
  ]
  totals = profile_step.op_durations(events)
  assert totals == {"ynn_fusion.3": 15, "ynn_fusion.12": 7,
                    "all-reduce.78": 4}
  assert profile_step.categories(totals) == {"ynn_fusion": 22,
                                             "all-reduce": 4}


def test_hlo_info_names_shape_and_source_op():
  hlo = textwrap.dedent("""\
      ENTRY %main {
        %ynn_fusion.7 = f32[1600,512]{1,0} fusion(%p), kind=kCustom, calls=%c, metadata={op_name="jit(step)/Mlp_0/dot_general" stack_frame_id=3}
        %all-reduce.2 = (f32[128]{0}, f32[4]{0}) all-reduce(%a, %b), to_apply=%r
      }
      """)
  info = profile_step.hlo_info(hlo)
  assert info["ynn_fusion.7"] == ("f32[1600,512]{1,0}",
                                  "jit(step)/Mlp_0/dot_general")
  assert info["all-reduce.2"] == ("(f32[128]{0},", "")


def test_one_traced_step_of_a_fake_task(tmp_path):
  """The trace of a jitted matmul step holds its operations: the script's
  reading of a real trace file, end to end (a subprocess: the trace flag
  must be set before JAX starts)."""
  script = textwrap.dedent(f"""
      import os, sys, tempfile
      sys.path.insert(0, {str(ROOT / "benchmarks")!r})
      os.environ["XLA_FLAGS"] = {profile_step.TRACE_FLAG!r}
      import jax, jax.numpy as jnp
      import profile_step
      f = jax.jit(lambda a: jnp.tanh(a @ a) * 2.0)
      a = jnp.ones((256, 256))
      f(a).block_until_ready()
      d = tempfile.mkdtemp()
      with jax.profiler.trace(d, create_perfetto_trace=True):
        for _ in range(3):
          f(a).block_until_ready()
      totals = profile_step.op_durations(profile_step.read_trace(d))
      assert totals and all(v >= 0 for v in totals.values()), totals
      print(sorted(profile_step.categories(totals)))
      """)
  out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "fusion" in out.stdout or "dot" in out.stdout, out.stdout
