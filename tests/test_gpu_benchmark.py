"""benchmarks/gpu.py --tiny on CPU: the one-GPU benchmark's script runs end
to end and writes every measurement (a number or an explicit error)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import conftest  # tests/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("matmul_peak", "sampler_float32", "sampler_bfloat16",
         "sampler_bfloat16_fused", "stage2_train", "stage1_train",
         "stage2_train_fused", "peak_memory")


def run_tiny(out, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(
                 [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")]
                                if p]))
  # Not conftest's 8 simulated devices; its code generation level.
  env["XLA_FLAGS"] = conftest.SUBPROCESS_XLA_FLAGS
  proc = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny",
       f"--out={out}", *extra], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return json.loads(out.read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  return run_tiny(tmp_path_factory.mktemp("gpu") / "gpu.json", "--all")


def test_every_measurement_has_a_number_or_an_error(report):
  assert report["tiny"] is True and report["complete"] is True
  assert report["platform"] == "cpu"
  assert set(report["measurements"]) == set(NAMES)
  for name, m in report["measurements"].items():
    has_number = isinstance(m["value"], (int, float))
    has_error = isinstance(m["error"], str) and m["error"]
    assert has_number != bool(has_error), (name, m)


def test_tiny_cpu_values(report):
  m = report["measurements"]
  # Everything but the device's peak memory runs on a CPU.
  for name in NAMES[:-1]:
    assert m[name]["error"] is None, (name, m[name]["error"])
    assert m[name]["value"] > 0, name
  assert m["matmul_peak"]["float32"] > 0 and m["matmul_peak"]["bfloat16"] > 0
  for mode in ("float32", "bfloat16", "bfloat16_fused"):
    s = m[f"sampler_{mode}"]
    assert s["batch"] == 2 and s["image_size"] == 16
    assert s["transformer_dtype"] == mode.split("_")[0]
    assert s["attention_impl"] == ("fused" if "fused" in mode else "default")
    assert s["mfu_reference"] == f"{mode.split('_')[0]} matmul peak"
    assert 0 < s["mfu"] and 0 < s["sample_mfu"]
    assert s["target"] == {"mfu": 0.40} and "mfu" in s["target_met"]
    assert s["forwards_per_batch"] == s["num_iter"]
  s2 = m["stage2_train"]
  assert s2["batch"] == 2 and s2["dtype"] == "bfloat16"
  assert s2["target"] == {"mfu": 0.45} and s2["value"] == s2["mfu"]
  assert s2["analytic"]["B"] == 2 and s2["flops_per_step"] > 0
  fused = m["stage2_train_fused"]
  assert fused["attention_impl"] == "fused" and s2["attention_impl"] == (
      "default")
  assert fused["attention_probs_dropout_prob"] == 0.0
  assert fused["analytic"] == s2["analytic"] and fused["value"] > 0
  for entry in (s2, fused):  # where each attempt's wall time went
    assert set(entry["phases_s"]) == {"init_s", "lower_s", "compile_s",
                                      "timed_s"}
    assert all(v >= 0 for v in entry["phases_s"].values())
  s1 = m["stage1_train"]
  assert s1["batch"] == 2 and s1["image_size"] == 16
  assert s1["value"] == s1["mfu"] and s1["flops_per_step"] > 0
  # Stage 1's MFU counts the program before optimisation (on a GPU the
  # compiled count misses cuDNN's convolutions).
  assert s1["hlo_flops_per_step"] > 0
  assert s1["mfu"] == pytest.approx(
      s1["hlo_flops_per_step"] / s1["step_s"] / s1["matmul_peak"])
  # XLA:CPU keeps no allocator statistics: null, with a reason.
  assert m["peak_memory"]["value"] is None
  assert "peak_bytes_in_use" in m["peak_memory"]["error"]


def test_profiles_name_the_operations(report):
  """Each train step has a `profile` and each sampler a `forward_profile`:
  the traced calls' XLA operations (on a CPU: the host's), per call."""
  m = report["measurements"]
  profiles = [m[n]["profile"] for n in ("stage2_train", "stage1_train",
                                        "stage2_train_fused")]
  profiles += [m[f"sampler_{mode}"]["forward_profile"]
               for mode in ("float32", "bfloat16", "bfloat16_fused")]
  for p in profiles:
    assert "error" not in p, p
    assert p["calls"] == 3 and p["where"] == "host XLA operations"
    assert p["ms_per_call"] > 0 and p["top"] and p["threads"]
    assert sum(r["ms"] for r in p["top"]) <= p["ms_per_call"] * (1 + 1e-9)
  # The step's operations carry their JAX source from the compiled HLO.
  assert any("Transformer" in r["source"]
             for r in m["stage2_train"]["profile"]["top"])
  for name in ("stage2_train", "stage1_train"):  # the state made on the host
    assert m[name]["phases_s"]["init_s"] > 0
  phases = m["sampler_float32"]["phases_s"]
  assert {"build_s", "lower_s", "compile_s", "warmup_s",
          "timed_s"} <= set(phases)


def test_no_gpu_without_tiny_records_errors(tmp_path):
  """Without a GPU (and without --tiny/--allow_cpu) every measurement gets
  the same explicit error and the script exits 2 at once."""
  out = tmp_path / "gpu.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), f"--out={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
      check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  report = json.loads(out.read_text())
  for name in NAMES:
    m = report["measurements"][name]
    assert m["value"] is None and m["error"].startswith("no GPU"), name


def test_the_default_run_leaves_out_the_comparisons():
  """Within the five minutes: the default run measures the fused bf16
  sampler and stage-2 step, not their default-attention comparisons
  (--all); the float32 sampler runs with any sampler."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import gpu  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  default = gpu.selected(gpu.parse_args([]))
  assert default == set(NAMES) - {"sampler_bfloat16", "stage2_train"}
  assert gpu.selected(gpu.parse_args(["--all"])) == set(NAMES)
  assert gpu.selected(gpu.parse_args(["--only=sampler_bfloat16_fused"])) == {
      "matmul_peak", "peak_memory", "sampler_float32",
      "sampler_bfloat16_fused"}


def test_only_reruns_some_and_keeps_the_rest(report, tmp_path):
  """--only measures the named entries (and the peak) again and keeps the
  others from the earlier file, each tagged with the run it came from."""
  out = tmp_path / "gpu.json"
  out.write_text(json.dumps(report))
  again = run_tiny(out, "--only=stage1_train")
  m = again["measurements"]
  for name in ("sampler_float32", "sampler_bfloat16", "stage2_train",
               "stage2_train_fused"):
    kept = dict(m[name])
    assert kept.pop("from_run")["started"] == report["started"], name
    assert kept == report["measurements"][name], name
  for name in ("matmul_peak", "stage1_train"):
    assert "from_run" not in m[name] and m[name]["value"] > 0, name
  assert m["stage1_train"]["wall_s"] != (
      report["measurements"]["stage1_train"]["wall_s"])
  # Once more: entries kept before keep the run they were measured in.
  third = run_tiny(out, "--only=stage2_train")["measurements"]
  assert third["sampler_float32"]["from_run"]["started"] == report["started"]
  assert third["stage1_train"]["from_run"]["started"] == again["started"]
  assert "from_run" not in third["stage2_train"]
