"""The Makefile's targets (dry runs): EVAL_ARGS reach the evaluator; the demo
sets up without the test extras, the tests with them."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _plan(target, *assignments):
  """What `make -n TARGET ASSIGNMENTS` would run, continuation lines joined."""
  proc = subprocess.run(["make", "-n", target, *assignments], cwd=ROOT,
                        capture_output=True, text=True, timeout=60,
                        check=True)
  return proc.stdout.replace("\\\n", " ")


def _dry_run(*assignments):
  text = _plan("eval", *assignments)
  lines = [l for l in text.splitlines() if "maskgit_jax.evaluate" in l]
  assert len(lines) == 1, text
  return lines[0].split()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_eval_passes_eval_args_to_the_evaluator():
  plain = _dry_run()
  assert "--num_samples=1000" in plain and "--num_real=1000" in plain
  assert not any(a.startswith("--cache_dir") for a in plain)
  extra = _dry_run("EVAL_ARGS=--cache_dir=/tmp/fid_cache", "EVAL_N=1200")
  assert "--cache_dir=/tmp/fid_cache" in extra
  assert "--num_samples=1200" in extra
  assert "--output=runs/fashion_mnist/eval_1200.json" in extra


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_demo_sets_up_without_the_test_extras_and_test_with_them(tmp_path):
  venv = tmp_path / "venv"  # no stamps there: every set-up step is planned
  demo = _plan("demo", f"VENV={venv}")
  assert f"{venv}/bin/python -m pip install -q -e .\n" in demo, demo
  assert "[test]" not in demo
  assert "maskgit_jax.train --config=configs/fashion_mnist.py" in demo
  # Its training fits what is left of 870 s from make's start.
  assert "--config.time_budget_s=$(( 870 - $(date +%s) + " in demo, demo
  test = _plan("test", f"VENV={venv}")
  assert f"{venv}/bin/python -m pip install -q -e \".[test]\"" in test, test
  assert test.index("install -q -e .\n") < test.index("[test]")
  assert "-m pytest" in test
