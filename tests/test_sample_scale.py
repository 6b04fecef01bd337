"""`--num_samples`: samples at scale over devices and processes, resumable.

2 processes x 4 devices give the same images as 1 process x 8 devices; a run
stopped after some shards resumes to the same file, every index once; the
.npz and PNG-folder layouts; bad requests are one `error:` line.
"""
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from maskgit_jax.generation import sample_lib
from maskgit_jax.generation import scale_lib
from maskgit_jax.store import loader
import sample_scale_worker as worker
import test_multiprocess
import test_train

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def load(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def test_two_processes_equal_one(tmp_path):
  """The same per-device batch (2): 8 images a step on each of 2 processes
  with 4 devices, 16 on one process with 8."""
  logs = tmp_path / "logs"
  logs.mkdir()
  script = str(HERE / "sample_scale_worker.py")
  two, one = tmp_path / "two.npz", tmp_path / "one.npz"
  procs_two = test_multiprocess.start(
      lambda i, port: [sys.executable, script, str(two), "2", str(i),
                       str(port), "8"], 2, 4, logs, "two")
  procs_one = test_multiprocess.start(
      lambda i, port: [sys.executable, script, str(one), "1", str(i),
                       str(port), "16"], 1, 8, logs, "one")
  test_multiprocess.wait_all(procs_two, logs, "two", timeout=300)
  test_multiprocess.wait_all(procs_one, logs, "one", timeout=300)
  a, b = load(two), load(one)
  assert a["arr_0"].shape == (worker.NUM_SAMPLES, 8, 8, 3)
  np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
  np.testing.assert_array_equal(a["labels"], b["labels"])
  assert a["arr_0"].std() > 0  # not a constant image
  # Process p sampled the shards i with i % 2 == p; only process 0 joined.
  for i in range(2):
    log = test_multiprocess.read_log(logs, "two", i)
    shards = sorted(int(l.split()[1]) for l in log.splitlines()
                    if l.startswith("shard "))
    assert shards == list(range(i, 6, 2)), log
    assert f"process {i}/2 local devices 4 wrote " in log
  assert str(two) in test_multiprocess.read_log(logs, "two", 0)
  assert "wrote None" in test_multiprocess.read_log(logs, "two", 1)
  assert not os.path.exists(scale_lib.shard_dir(str(two)))


@pytest.fixture(scope="module")
def tiny():
  config = test_train.tiny_config()
  sampler = sample_lib.sampler_of(config, loader.load_models(
      config, random_init=True, required=loader.STAGES))
  return config, sampler


def plan(output, num_samples=20, **kwargs):
  kwargs = dict(dict(seed=1, batch_size=8, shard_size=4), **kwargs)
  return scale_lib.plan(str(output), num_samples, 10, **kwargs)


class Stop(Exception):
  pass


def test_a_stopped_run_resumes_to_the_same_file(tmp_path, tiny):
  config, sampler = tiny
  full = plan(tmp_path / "full.npz")
  scale_lib.write_samples(config, lambda: sampler, full, progress=False)

  p = plan(tmp_path / "resumed.npz")

  def stop_after_two(i):
    if i == 1:
      raise Stop()
  with pytest.raises(Stop):
    scale_lib.write_samples(config, lambda: sampler, p, progress=False,
                            after_shard=stop_after_two)
  shards = pathlib.Path(scale_lib.shard_dir(p.output))
  assert sorted(os.listdir(shards)) == ["shard_00000.npz", "shard_00001.npz"]
  assert not os.path.exists(p.output)
  # A write killed midway leaves only a temporary file (atomic_write).
  (shards / ".tmp-killed.npz").write_bytes(b"PK\x03\x04 half")
  fn = scale_lib.sharded_images_fn(sampler, jax.local_devices(), p.labels,
                                   p.seed, **sample_lib.decode_options(config))
  done = scale_lib.sample_shards(p, fn)
  assert done == [2, 3, 4]  # only the missing shards
  scale_lib.join(p)
  a, b = load(full.output), load(p.output)
  assert a.keys() == b.keys() == {"arr_0", "labels", "meta"}
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert not shards.exists()
  # A rerun of a finished command changes nothing.
  before = os.stat(p.output).st_mtime_ns
  scale_lib.write_samples(config, lambda: pytest.fail("loaded"), p)
  assert os.stat(p.output).st_mtime_ns == before


def test_layouts_npz_and_png_folder(tmp_path, tiny):
  config, sampler = tiny
  p = plan(tmp_path / "s.npz", num_samples=13, classes=[2, 5])
  scale_lib.write_samples(config, lambda: sampler, p, progress=False)
  with np.load(p.output, allow_pickle=False) as f:
    images, labels = f["arr_0"], f["labels"]
  assert images.dtype == np.uint8 and images.shape == (13, 8, 8, 3)
  # The tiny model is grey: one channel repeated.
  np.testing.assert_array_equal(images[..., 0], images[..., 2])
  assert labels.shape == (13,) and np.issubdtype(labels.dtype, np.integer)
  assert labels.tolist() == [2] * 7 + [5] * 6
  # A PNG folder of the same request holds the same images.
  q = plan(tmp_path / "pngs", num_samples=13, classes=[2, 5])
  scale_lib.write_samples(config, lambda: sampler, q, progress=False)
  names = sorted(n for n in os.listdir(q.output) if n.endswith(".png"))
  assert names == [f"{i:06d}_{c}.png" for i, c in enumerate(labels)]
  pngs = np.stack([np.asarray(Image.open(os.path.join(q.output, n))
                              .convert("RGB")) for n in names])
  np.testing.assert_array_equal(pngs, images)


def test_outputs_of_others_are_never_overwritten(tmp_path, tiny):
  config, sampler = tiny
  theirs = tmp_path / "theirs.npz"
  np.savez(theirs, arr_0=np.zeros((2, 8, 8, 3), np.uint8))
  before = theirs.read_bytes()
  with pytest.raises(ValueError, match="exists and does not hold"):
    scale_lib.write_samples(config, lambda: sampler, plan(theirs))
  folder = tmp_path / "folder"
  folder.mkdir()
  (folder / "x.png").write_bytes(b"x")
  with pytest.raises(ValueError, match="exists and does not hold"):
    scale_lib.write_samples(config, lambda: sampler, plan(folder))
  assert theirs.read_bytes() == before
  assert os.listdir(folder) == ["x.png"]
  # Under a file (npz, or a folder of PNGs): one line before sampling.
  for output in (theirs / "s.npz", theirs / "pngs"):
    with pytest.raises(ValueError, match=r"Cannot write .*theirs.npz/"
                       r"(s.npz|pngs/sample.png): .*theirs.npz is a file, "
                       r"not a folder\."):
      plan(output)
  # Shards of other settings are not mixed in.
  p = plan(tmp_path / "a.npz")
  scale_lib.sample_shards(p, lambda labels, key: np.zeros(
      (len(labels), 8, 8, 3), np.uint8), process_count=5)
  with pytest.raises(ValueError, match="other settings"):
    scale_lib.write_samples(config, lambda: sampler,
                            plan(tmp_path / "a.npz", seed=2))


def run_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(
      [sys.executable, "-m", "maskgit_jax.sample",
       "--config=configs/fashion_mnist.py", "--random_init", *args],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=env)


def test_cli_bad_requests_are_one_error_line(tmp_path):
  existing = tmp_path / "samples.npz"
  existing.write_bytes(b"someone else's")
  cases = {
      "--num_samples=0": "error: --num_samples=0 must be an int >= 1.",
      f"--output={tmp_path}/s.png": (
          f"error: Cannot write {tmp_path}/s.png with --num_samples: give an "
          ".npz file or a folder (a name without an extension)."),
      f"--output={existing}": (
          f"error: {existing} exists and does not hold these samples (other "
          "settings, or not written by this command); remove it or choose "
          "another --output."),
      "--shard_size=0": "error: --shard_size=0 must be an int >= 1.",
  }
  procs = {flag: run_cli("--num_samples=8", flag) for flag in cases}
  for flag, expected in cases.items():
    _, err = procs[flag].communicate(timeout=300)
    assert procs[flag].returncode == 1, err
    assert err.strip().splitlines()[-1] == expected, err
    assert "Traceback" not in err
  assert existing.read_bytes() == b"someone else's"
  assert sorted(os.listdir(tmp_path)) == ["samples.npz"]
