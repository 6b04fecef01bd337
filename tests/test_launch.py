"""The launch scripts, checked without a cloud or a cluster
(launch/selftest.sh: a fake gcloud that syntax-checks every remote command,
slurm.sbatch --dry-run, local_multiprocess.sh with a stand-in module)."""
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_launch_selftest():
  proc = subprocess.run(["bash", str(ROOT / "launch" / "selftest.sh")],
                        cwd=ROOT, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "FAIL" not in proc.stdout + proc.stderr
  assert proc.stdout.count("ok:") >= 5, proc.stdout
