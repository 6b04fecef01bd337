"""benchmarks/compile_memory.py: the compile-only memory check, tiny model.

Runs the script in a subprocess (it sets the simulated device count before
jax is imported) on 8 CPU devices: the stage-2 step of configs/imagenet.py
with the "tiny" tokenizer and transformer presets, compiled for a pure
data-parallel mesh (8, 1, 1) and an FSDP mesh (1, 8, 1).
"""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 8


def test_compile_memory_report(tmp_path):
  out = tmp_path / "compile_memory.json"
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  cmd = [sys.executable, str(ROOT / "benchmarks" / "compile_memory.py"),
         f"--devices={DEVICES}", f"--mesh={DEVICES},1,1",
         f"--mesh=1,{DEVICES},1", "--config=configs/imagenet.py",
         "--set", "transformer.preset=tiny", "--set", "tokenizer.preset=tiny",
         "--set", "image_size=8", f"--batch_size={DEVICES}",
         "--no_residuals", f"--out={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  report = json.loads(out.read_text())
  assert report["backend"] == "cpu"
  assert f"device_count={DEVICES}" in report["xla_flags"]
  dp, fsdp = report["results"]
  assert dp["mesh"] == [DEVICES, 1, 1] and fsdp["mesh"] == [1, DEVICES, 1]
  for r in (dp, fsdp):
    assert r["stage"] == "transformer"
    assert r["global_batch"] == DEVICES and r["per_device_batch"] == 1
    mem = r["memory_per_device"]
    for key in ("argument", "output", "temp", "peak"):
      assert mem[key] > 0, (key, r)
    # The whole train state is donated: its buffers are reused for the output.
    assert mem["alias"] == r["state_bytes_per_device"], r
    assert r["compile_s"] > 0 and r["param_count"] > 0
  # Same model, same global sizes; FSDP shards the state over the devices.
  assert fsdp["param_count"] == dp["param_count"]
  assert dp["state_bytes_per_device"] == dp["state_bytes"]  # replicated
  assert fsdp["state_bytes_per_device"] < dp["state_bytes_per_device"] / 4
  assert (fsdp["memory_per_device"]["argument"] <
          dp["memory_per_device"]["argument"])
  assert "| config | mesh" in proc.stdout  # the printed table
