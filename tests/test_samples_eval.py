"""Evaluating any generator's samples (`python -m maskgit_jax.evaluate
--samples=...`): file layouts, the reference cache, the split of the
feature extraction, bad input (issue 15, item 3)."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from maskgit_jax import data as data_lib
from maskgit_jax.evaluation import report as report_lib
from maskgit_jax.evaluation import samples_eval
from maskgit_jax.metrics import features
from maskgit_jax.nets import inception_weights
import test_evaluate
import test_multiprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _real_images(config, split, n):
  """The first n images of a split in source order, as uint8 RGB."""
  ds = data_lib.create_dataset(data_lib.config.for_model(config, 1), split,
                               1, process_index=0, process_count=1)
  out, labels = [], []
  for i in range(n):
    image, label = ds.source[i]
    out.append(ds.preprocessor(image, None))
    labels.append(label)
  grey = (np.stack(out) * 255).round().astype(np.uint8)
  return np.repeat(grey, 3, axis=-1), np.asarray(labels)


@pytest.fixture(scope="module")
def config():
  return test_evaluate.tiny_config(max_examples=64)


def test_an_npz_of_real_images_scores_like_the_floor(tmp_path, config):
  images, labels = _real_images(config, "train", 12)
  path = tmp_path / "samples.npz"
  np.savez(path, arr_0=images, labels=labels)
  report = samples_eval.evaluate_samples(
      config, str(path), num_real=12, num_train=10, batch_size=8,
      feature_extractor=test_evaluate.PixelFeatures(), progress=False)
  section = report["samples"]
  assert section["num_samples"] == 12 and section["source"] == "samples.npz"
  assert section["image_shape"] == [16, 16, 3]
  assert 0 < section["fid"] and section["fid_floor"] > 0
  # Real train images judged against real eval images: near the floor.
  assert section["fid"] < 5 * section["fid_floor"]
  assert section["class_fidelity"]["generated_accuracy"] is not None
  written = tmp_path / "samples.eval.json"
  assert json.loads(written.read_text()) == report
  assert os.path.abspath(report_lib.report_file(report)) == str(written)
  table = report_lib.format_report(report)
  assert "Samples from samples.npz (12 images" in table
  assert "real-vs-real floor" in table
  # The reference features were written once and are reused.
  assert os.listdir(tmp_path / "eval_cache")


def test_folders_flat_and_per_class(tmp_path, config):
  images, labels = _real_images(config, "train", 12)
  flat, per_class = tmp_path / "flat", tmp_path / "classes"
  for i, (image, label) in enumerate(zip(images, labels)):
    for folder in (flat, per_class / f"c{label:02d}"):
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(folder / f"{i:03d}.png")
  loaded, none = samples_eval.load_samples(str(flat))
  assert none is None and loaded.shape == (12, 16, 16, 3)
  np.testing.assert_array_equal(loaded, images)
  loaded, got = samples_eval.load_samples(str(per_class))
  names = sorted({f"c{l:02d}" for l in labels})
  assert sorted(got.tolist()) == sorted(names.index(f"c{l:02d}")
                                        for l in labels)
  report = samples_eval.evaluate_samples(
      config, str(flat), num_real=12, batch_size=8,
      output=str(tmp_path / "r.json"),
      feature_extractor=test_evaluate.PixelFeatures(), progress=False)
  assert report["samples"]["class_fidelity"] is None
  assert "n/a (no class labels)" in report_lib.format_report(report)


@pytest.mark.parametrize("case,match", [
    ("missing", "Samples not found"),
    ("no_arr_0", "no arr_0"),
    ("bad_shape", "arr_0 must be"),
    ("bad_dtype", r"arr_0 must be uint8 \(or float in \[0, 1\]\), got int32"),
    ("empty_folder", "no images"),
    ("bad_labels", r"class ids must be in \[0, 10\)"),
    ("too_few", "need at least 4 samples"),
    # The default report path holds a file that is not a report: kept.
    ("not_a_report", r"s.eval.json exists and is not an evaluation report"),
])
def test_bad_samples_are_one_clear_error(tmp_path, config, case, match):
  path = tmp_path / "s.npz"
  good = np.zeros((12, 16, 16, 3), np.uint8)
  if case == "no_arr_0":
    np.savez(path, images=good)
  elif case == "bad_shape":
    np.savez(path, arr_0=np.zeros((12, 16, 16, 2), np.uint8))
  elif case == "bad_dtype":
    np.savez(path, arr_0=good.astype(np.int32))
  elif case == "empty_folder":
    path = tmp_path / "empty"
    path.mkdir()
  elif case == "bad_labels":
    np.savez(path, arr_0=good, labels=np.full(12, 10))
  elif case == "too_few":
    np.savez(path, arr_0=good[:2])
  elif case == "not_a_report":
    np.savez(path, arr_0=good)
    (tmp_path / "s.eval.json").write_text("mine")
  with pytest.raises((ValueError, FileNotFoundError), match=match):
    samples_eval.evaluate_samples(
        config, str(path), num_real=12, batch_size=8,
        feature_extractor=test_evaluate.PixelFeatures(), progress=False)
  if case == "not_a_report":
    assert (tmp_path / "s.eval.json").read_text() == "mine"
  else:
    assert not (tmp_path / "s.eval.json").exists()


def test_cli_error_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "maskgit_jax.evaluate",
       f"--samples={tmp_path / 'nope.npz'}",
       "--config=configs/fashion_mnist.py"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      f"error: Samples not found: {tmp_path / 'nope.npz'}"]


def test_inception_batch_sharded_over_local_devices():
  """Splitting each batch over the 8 simulated devices gives the features
  of one device."""
  params = inception_weights.random_params()
  images = np.random.default_rng(0).uniform(size=(8, 16, 16, 3))
  one = features.InceptionFeatureExtractor(8, params=params)(images)
  split = features.InceptionFeatureExtractor(8, params=params,
                                             shard_batch=True)
  assert split._sharding is not None  # pylint: disable=protected-access
  np.testing.assert_allclose(split(images), one, rtol=1e-4, atol=1e-4)


WORKER = os.path.join(ROOT, "tests", "split_features_worker.py")


def test_feature_extraction_split_across_two_processes(tmp_path):
  logs = tmp_path / "logs"
  logs.mkdir()
  procs = test_multiprocess.start(lambda i, port: [
      sys.executable, WORKER, str(tmp_path / "out_"), "2", str(i), str(port)],
      2, 2, logs, "split")
  test_multiprocess.wait_all(procs, logs, "split", timeout=300)
  expected = samples_eval.split_features(
      np.arange(11 * 3, dtype=np.float32).reshape(11, 3),
      lambda x: np.asarray(x) * 2 + 1)
  for i in range(2):
    with np.load(tmp_path / f"out_{i}.npz") as f:
      np.testing.assert_array_equal(f["features"], expected)
