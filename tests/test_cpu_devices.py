"""config.cpu_devices: one JAX device per core on a CPU (data parallel)."""
import os
import pathlib
import subprocess
import sys

import pytest

from maskgit_jax.common import cpu_devices
import conftest  # tests/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORCE = "--xla_force_host_platform_device_count=8"


def test_resolve():
  assert cpu_devices.resolve(0, environ={}) is None
  assert cpu_devices.resolve(-1, environ={}, cores=6) == 6
  assert cpu_devices.resolve(3, environ={}, cores=6) == 3
  # An explicit XLA flag wins over "one per core", not over a count.
  assert cpu_devices.resolve(-1, environ={"XLA_FLAGS": FORCE}, cores=6) is None
  assert cpu_devices.resolve(3, environ={"XLA_FLAGS": FORCE}) == 3
  assert cpu_devices.available_cores() >= 1
  for bad in (-2, 1.5, "2", True):
    with pytest.raises(ValueError, match=r"config.cpu_devices="):
      cpu_devices.resolve(bad, environ={})


def test_apply_after_jax_started_leaves_the_count():
  import jax  # pylint: disable=import-outside-toplevel
  count = jax.local_device_count()  # starts the backend (8 in the tests)
  note = cpu_devices.apply(count + 1)
  assert note is not None and f"{count} device(s)" in note
  assert jax.local_device_count() == count


def _train(tmp_path, *overrides):
  env = dict(os.environ, XLA_FLAGS=conftest.SUBPROCESS_XLA_FLAGS)
  tiny = ["--config.image_size=8", "--config.tokenizer.preset=tiny",
          "--config.transformer.preset=tiny", "--config.data.max_examples=64",
          "--config.stages=tokenizer",
          "--config.tokenizer_training.num_steps=1",
          "--config.tokenizer_training.batch_size=8",
          "--config.tokenizer_training.tensorboard=False"]
  return subprocess.run(
      [sys.executable, "-m", "maskgit_jax.train",
       "--config=configs/fashion_mnist.py", f"--workdir={tmp_path / 'run'}",
       *tiny, *overrides], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=300)


def test_train_entry_point_makes_the_devices(tmp_path):
  result = _train(tmp_path, "--config.cpu_devices=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "over 2 cpu device(s)" in result.stdout, result.stdout[-2000:]


def test_bad_count_is_one_error_line(tmp_path):
  result = _train(tmp_path, "--config.cpu_devices=-3")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      "error: config.cpu_devices=-3 must be an integer: 0 (JAX's default), "
      "-1 (one per core) or a count > 0."]
  assert not (tmp_path / "run").exists()
