"""Evaluation: the report, floors, caching, loading, CLI errors, the hook.

Tiny initialised models (16x16 Fashion-MNIST, 10 classes) are saved with the
training Checkpointer into a workdir, or in the released msgpack format.
Features come from the FID Inception network with random params projected
to 8 dimensions (the real 2048-d FID costs minutes of `sqrtm` on a CPU), or,
where the network does not matter, from pooled pixels.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

from absl import flags
import flax
import numpy as np
import pytest

from maskgit_jax.common import files
from maskgit_jax.evaluation import evaluate_lib
from maskgit_jax.evaluation import evaluators
from maskgit_jax.evaluation import generation
from maskgit_jax.evaluation import real_images
from maskgit_jax.evaluation import report as report_lib
from maskgit_jax.generation import sample_lib
from maskgit_jax.nets import factory
from maskgit_jax.metrics import features
from maskgit_jax.metrics import fid
from maskgit_jax.metrics import reference
from maskgit_jax.nets import inception
from maskgit_jax.nets import inception_weights
from maskgit_jax.store import checkpoint as checkpoint_lib
import release_params
import test_train

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZES = dict(num_samples=12, num_real=12, num_train=10, batch_size=8)


def tiny_config(max_examples=64):
  config = test_train.tiny_config()
  config.image_size = 16
  config.data.max_examples = max_examples
  return config


class RandomInception8:
  """FID Inception-v3 with random params, features projected to 8-d."""
  name = "test-random-inception-8d"

  def __init__(self):
    self.net = features.InceptionFeatureExtractor(
        8, params=inception_weights.random_params())
    self.proj = np.random.RandomState(0).randn(
        inception.FEATURE_DIM, 8).astype(np.float32) / 45.0
    self.calls = 0

  def __call__(self, images):
    self.calls += 1
    return self.net(images) @ self.proj


class PixelFeatures:
  """4-d features: 2x2 average-pooled grey images."""
  name = "test-pixels"

  def __init__(self, fail_after=None):
    self.calls = 0
    self.fail_after = fail_after

  def __call__(self, images):
    self.calls += 1
    if self.fail_after is not None and self.calls > self.fail_after:
      raise RuntimeError("feature extractor failed on purpose")
    x = np.asarray(images, np.float32).mean(-1)
    b, h, w = x.shape
    return x.reshape(b, 2, h // 2, 2, w // 2).mean((2, 4)).reshape(b, 4)


def init_variables(config, seed=0):
  """Random variables of the config's models (`release_params.fill`: no
  jitted init to compile)."""
  tok = factory.tokenizer_from_config(config)
  tr = factory.transformer_from_config(config)
  images = np.zeros((1, config.image_size, config.image_size, tok.channels),
                    np.float32)
  tok_vars = release_params.fill(release_params.shapes_of(
      tok, images,
      method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x))),
                                 seed)
  ids = np.zeros((1, tr.max_position_embeddings), np.int32)
  tr_vars = release_params.fill(release_params.shapes_of(tr, ids), seed + 1000)
  return tok_vars, tr_vars


def save_checkpoint(directory, step, params, ema_params):
  ckpt = checkpoint_lib.Checkpointer(str(directory), async_save=False)
  ckpt.save(step, {"params": params, "ema_params": ema_params,
                   "step": np.int32(step)})
  ckpt.manager.wait_until_finished()
  ckpt.manager.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A workdir as training leaves it: config.json and both stages' checkpoints
  (tokenizer with EMA params, transformer without), plus an unreadable newer
  tokenizer checkpoint."""
  workdir = tmp_path_factory.mktemp("run")
  config = tiny_config()
  tok_vars, tr_vars = init_variables(config, seed=0)
  ema_vars, _ = init_variables(config, seed=1)
  files.write_config_json(config, str(workdir / "config.json"))
  save_checkpoint(workdir / "tokenizer" / "checkpoints", 2,
                  tok_vars["params"], ema_vars["params"])
  save_checkpoint(workdir / "transformer" / "checkpoints", 2,
                  tr_vars["params"], None)
  save_checkpoint(workdir / "tokenizer" / "checkpoints", 4,
                  tok_vars["params"], ema_vars["params"])
  shutil.rmtree(workdir / "tokenizer" / "checkpoints" / "4" / "state")
  return workdir, {"tokenizer": tok_vars, "ema": ema_vars,
                   "transformer": tr_vars}


@pytest.fixture(scope="module")
def full_report(run_dir):
  workdir, _ = run_dir
  extractor = RandomInception8()
  report = evaluate_lib.evaluate(None, str(workdir),
                                 feature_extractor=extractor, progress=False,
                                 **SIZES)
  return report, extractor


def test_report_has_every_metric_in_range(run_dir, full_report):
  workdir, _ = run_dir
  report, _ = full_report
  assert report["format"] == report_lib.REPORT_FORMAT
  assert report["stages"] == ["tokenizer", "transformer"]
  # Newest readable checkpoint (4 is unreadable), EMA params preferred.
  assert report["models"]["tokenizer"]["step"] == 2
  assert report["models"]["tokenizer"]["unreadable"] == [4]
  assert report["models"]["tokenizer"]["params"] == "ema"
  assert report["models"]["transformer"]["step"] == 2
  assert report["models"]["transformer"]["params"] == "params"

  tok = report["tokenizer"]
  assert set(tok) == {
      "num_images", "image_size", "psnr", "ssim", "rfid", "rfid_floor",
      "rfid_floor_images", "rfid_floor_note", "codebook_size",
      "codebook_used", "codebook_usage_percent", "codebook_perplexity"}
  assert tok["num_images"] == 12 and tok["rfid_floor_images"] == 12
  assert 0 < tok["psnr"] < 60
  assert -1 <= tok["ssim"] <= 1
  assert tok["rfid"] > 0 and tok["rfid_floor"] > 0
  assert tok["rfid_floor_note"] is None
  assert tok["codebook_size"] == 16
  assert 1 <= tok["codebook_used"] <= 16
  assert tok["codebook_usage_percent"] == pytest.approx(
      100 * tok["codebook_used"] / 16)
  assert 1 <= tok["codebook_perplexity"] <= tok["codebook_used"] + 1e-9

  tr = report["transformer"]
  assert {"num_samples", "fid", "fid_floor", "fid_floor_images",
          "fid_floor_note", "fid_reference_images", "precision", "recall",
          "density", "coverage", "class_fidelity",
          "decode_options"} <= set(tr)
  assert tr["fid"] > 0 and tr["fid_floor"] > 0 and tr["fid_floor_note"] is None
  assert tr["fid_floor_images"] == 12 and tr["fid_reference_images"] == 12
  for key in ("precision", "recall", "coverage"):
    assert 0 <= tr[key] <= 1
  assert tr["density"] >= 0
  assert tr["decode_options"]["num_iter"] == 2  # config.sampling
  cf = tr["class_fidelity"]
  assert cf["k"] == 5 and cf["classifier_train_images"] == 10
  assert 0 <= cf["generated_accuracy"] <= 1
  assert 0 <= cf["real_eval_accuracy"] <= 1
  assert sorted(cf["per_class"], key=int) == [str(c) for c in range(10)]
  # 12 samples for 12 reference images: the reference's classes, each as
  # often (`sample_labels="reference"`, the default), not 12 spread evenly.
  assert tr["sample_labels"] == "reference"
  assert report["settings"]["sample_labels"] == "reference"
  generated = [cf["per_class"][str(c)]["num_generated"] for c in range(10)]
  assert generated == [cf["per_class"][str(c)]["num_real_eval"]
                       for c in range(10)]
  assert generated != [2, 2] + [1] * 8  # what "balanced" gives
  assert cf["per_class"]["7"]["name"] == "Sneaker"
  for row in cf["per_class"].values():
    if row["num_generated"]:
      hits = row["generated"] * row["num_generated"]  # a whole number
      assert 0 <= round(hits) <= row["num_generated"]
      assert hits == pytest.approx(round(hits))
    else:
      assert row["generated"] is None
    assert row["real_eval"] is None or 0 <= row["real_eval"] <= 1
  assert sum(r["num_real_eval"] for r in cf["per_class"].values()) == 12

  # The file: in the workdir, complete, equal to the returned report.
  path = pathlib.Path(report_lib.report_file(report))
  assert path.parent == workdir and path.name.startswith("eval_")
  assert not os.path.isabs(report["path"])  # relative to the workdir
  assert json.loads(path.read_text()) == report
  table = evaluate_lib.format_report(report)
  assert "rFID" in table and "FID" in table and "Sneaker" in table
  assert table.count("real-vs-real floor") == 2


def test_floor_is_held_out_real_images_against_the_reference(run_dir,
                                                             full_report):
  workdir, _ = run_dir
  report, _ = full_report
  cached = {split: reference.ReferenceStats.load(p)
            for split in ("eval", "train")
            for p in (workdir / "eval_cache").glob(
                f"*_{split}_16x16_test-random-inception-8d.npz")}
  assert set(cached) == {"eval", "train"}
  # Reference (12) plus held-out images (12) for the floors; 10 train.
  assert cached["eval"].num_images == 24
  assert cached["train"].num_images == 10
  real = cached["eval"].features
  expected = fid.fid_from_features(real[12:24], real[:12])
  assert report["tokenizer"]["rfid_floor"] == pytest.approx(expected,
                                                            rel=1e-9)
  assert report["transformer"]["fid_floor"] == pytest.approx(expected,
                                                             rel=1e-9)
  labels = cached["eval"].metadata["labels"]
  assert len(labels) == 24 and len(set(labels)) > 3  # a class-mixed subset


def test_cached_real_features_are_reused(run_dir, full_report, tmp_path):
  workdir, _ = run_dir
  report, extractor = full_report
  extractor.calls = 0
  again = evaluate_lib.evaluate(
      None, str(workdir), stages=["tokenizer"], feature_extractor=extractor,
      output=str(tmp_path / "again.json"), progress=False, **SIZES)
  assert extractor.calls == 2  # the 12 reconstructions only (batches of 8)
  assert again["tokenizer"] == report["tokenizer"]
  assert again["transformer"] is None


def test_ema_params_are_the_ones_evaluated(run_dir, tmp_path):
  workdir, variables = run_dir
  kwargs = dict(stages=["tokenizer"], feature_extractor=PixelFeatures(),
                cache_dir=str(tmp_path), progress=False, **SIZES)
  from_workdir = evaluate_lib.evaluate(
      None, str(workdir), output=str(tmp_path / "a.json"), **kwargs)
  ema = evaluate_lib.evaluate(
      None, str(workdir), tokenizer_variables=variables["ema"],
      output=str(tmp_path / "b.json"), **kwargs)
  raw = evaluate_lib.evaluate(
      None, str(workdir), tokenizer_variables=variables["tokenizer"],
      output=str(tmp_path / "c.json"), **kwargs)
  assert from_workdir["tokenizer"]["psnr"] == ema["tokenizer"]["psnr"]
  assert from_workdir["tokenizer"]["psnr"] != raw["tokenizer"]["psnr"]
  assert ema["models"]["tokenizer"]["source"] == "given"


def write_released(tmp_path, config, seed=0):
  tok_vars, tr_vars = init_variables(config, seed)
  (tmp_path / "tok").write_bytes(flax.serialization.to_bytes(tok_vars))
  (tmp_path / "tr").write_bytes(flax.serialization.to_bytes(tr_vars))
  return str(tmp_path / "tok"), str(tmp_path / "tr")


def test_released_files_and_a_floor_without_enough_real_images(tmp_path):
  config = tiny_config(max_examples=20)  # 20 < 12 reference + 12 held out
  tok, tr = write_released(tmp_path, config)
  # The tokenizer from an exported folder (`python -m maskgit_jax.export`),
  # the transformer from an explicit file; the config from config.json.
  workdir = tmp_path / "exported"
  workdir.mkdir()
  shutil.copy(tok, workdir / "tokenizer.msgpack")
  files.write_config_json(config, str(workdir / "config.json"))
  report = evaluate_lib.evaluate(
      None, str(workdir), transformer_checkpoint=tr,
      feature_extractor=PixelFeatures(), progress=False, **SIZES)
  assert report["models"]["tokenizer"] == {
      "source": "file", "path": "tokenizer.msgpack", "step": None}
  assert os.path.normpath(os.path.join(
      workdir, report["models"]["transformer"]["path"])) == tr
  assert report["data"]["eval_examples"] == 20
  for stage, key in (("tokenizer", "rfid"), ("transformer", "fid")):
    section = report[stage]
    assert section[key] > 0
    assert section[f"{key}_floor"] is None
    assert "needs 24 real eval images" in section[f"{key}_floor_note"]
    assert "only 20" in section[f"{key}_floor_note"]
  assert any("needs 24 real eval images" in n for n in report["notes"])
  assert json.loads(pathlib.Path(
      report_lib.report_file(report)).read_text()) == report
  assert "floor: n/a" in evaluate_lib.format_report(report)


def test_images_smaller_than_the_ssim_window(tmp_path):
  config = tiny_config()
  config.image_size = 8
  tok, _ = write_released(tmp_path, config)
  report = evaluate_lib.evaluate(
      config, str(tmp_path), tokenizer_checkpoint=tok, stages=["tokenizer"],
      feature_extractor=PixelFeatures(), progress=False, **SIZES)
  assert report["tokenizer"]["ssim"] is None
  assert report["tokenizer"]["psnr"] > 0
  assert "SSIM needs images of at least 11x11 pixels" in report["notes"]


def test_bad_input_raises_before_writing_anything(run_dir, tmp_path):
  workdir, _ = run_dir
  config = tiny_config()
  config.num_classes = 3
  tok, tr = write_released(tmp_path, config)
  empty = tmp_path / "empty"
  empty.mkdir()
  before = sorted(os.listdir(workdir))
  kwargs = dict(feature_extractor=PixelFeatures(), progress=False, **SIZES)
  # A 3-class transformer, but the data has 10 classes.
  with pytest.raises(ValueError, match=r"num_classes=3 but the eval data "
                     r"has 10 classes"):
    evaluate_lib.evaluate(config, str(empty), tokenizer_checkpoint=tok,
                          transformer_checkpoint=tr, **kwargs)
  # The workdir's 10-class transformer does not fit a 3-class config.
  with pytest.raises(ValueError, match=r"transformer/checkpoints/2.*shape"):
    evaluate_lib.evaluate(config, str(workdir), **kwargs)
  with pytest.raises(ValueError, match="nothing to evaluate"):
    evaluate_lib.evaluate(config, str(empty), **kwargs)
  with pytest.raises(ValueError, match="config.json does not exist"):
    evaluate_lib.evaluate(None, str(empty), **kwargs)
  with pytest.raises(ValueError, match="does not exist"):
    evaluate_lib.evaluate(config, str(tmp_path / "missing"), **kwargs)
  with pytest.raises(ValueError, match="num_samples=2"):
    evaluate_lib.evaluate(config, str(workdir), **{**kwargs,
                                                   "num_samples": 2})
  # --output naming a file that is not a report (the run's own record, a
  # source file): refused before anything is computed, the file kept.
  record = (workdir / "config.json").read_bytes()
  (tmp_path / "notes.txt").write_text("mine")
  for path in (workdir / "config.json", tmp_path / "notes.txt"):
    with pytest.raises(ValueError, match=r"--output=.* exists and is not an "
                       r"evaluation report: it would be replaced"):
      evaluate_lib.evaluate(None, str(workdir), output=str(path), **kwargs)
  # A feature cache under a file: before, a traceback once the features
  # were computed.
  with pytest.raises(ValueError, match=r"Cannot write .*notes.txt/"
                     r"features.npz: .*notes.txt is a file, not a folder\."):
    evaluate_lib.evaluate(None, str(workdir), **{
        **kwargs, "cache_dir": str(tmp_path / "notes.txt")})
  assert (workdir / "config.json").read_bytes() == record
  assert (tmp_path / "notes.txt").read_text() == "mine"
  assert os.listdir(empty) == []
  assert sorted(os.listdir(workdir)) == before


def test_failure_midway_keeps_the_existing_report(run_dir, tmp_path):
  workdir, _ = run_dir
  output = tmp_path / "report.json"
  previous = '{"format": "maskgit_jax.evaluation/1", "previous": true}'
  output.write_text(previous)
  # Real eval (24 images) 3 calls, train (10) 2, reconstructions (12) 2;
  # the 8th call is the first batch of samples.
  extractor = PixelFeatures(fail_after=7)
  with pytest.raises(RuntimeError, match="on purpose"):
    evaluate_lib.evaluate(None, str(workdir), feature_extractor=extractor,
                          cache_dir=str(tmp_path / "cache"),
                          output=str(output), progress=False, **SIZES)
  assert extractor.calls == 8
  assert output.read_text() == previous
  assert sorted(p.name for p in tmp_path.iterdir()) == ["cache",
                                                        "report.json"]


def test_training_hook(run_dir, tmp_path):
  workdir, variables = run_dir
  hook_dir = tmp_path / "hook"
  shutil.copytree(workdir / "tokenizer", hook_dir / "tokenizer")
  shutil.rmtree(hook_dir / "tokenizer" / "checkpoints" / "4")
  config = tiny_config()
  extractor = PixelFeatures()
  assert evaluators.evaluate_after_stage(
      config, str(hook_dir), "tokenizer", feature_extractor=extractor) is None
  config.evaluation = dict(enabled=True, num_samples=12, num_real=12,
                           num_train=0, batch_size=8, seed=0, cache_dir="")
  logged = []
  report = evaluators.evaluate_after_stage(
      config, str(hook_dir), "tokenizer", feature_extractor=extractor,
      log=logged.append)
  assert report["path"] == "eval_tokenizer_2.json"  # relative to the workdir
  assert report_lib.report_file(report) == str(hook_dir / "eval_tokenizer_2.json")
  assert report["stages"] == ["tokenizer"] and report["transformer"] is None
  assert report["settings"]["num_train"] == 12
  assert "PSNR" in logged[-1]
  # Done already: returned as saved, nothing evaluated.
  again = evaluators.evaluate_after_stage(
      config, str(hook_dir), "tokenizer",
      feature_extractor=PixelFeatures(fail_after=0))
  assert again == report
  # The variables of the run, and the step given.
  given = evaluators.evaluate_after_stage(
      config, str(hook_dir), "tokenizer", step=7,
      tokenizer_variables=variables["ema"], feature_extractor=extractor,
      log=logged.append)
  assert given["tokenizer"] == report["tokenizer"]
  assert (hook_dir / "eval_tokenizer_7.json").is_file()


def test_balanced_labels():
  labels = sample_lib.balanced_labels(23, 10)
  assert np.bincount(labels).tolist() == [3, 3, 3] + [2] * 7
  assert np.all(np.diff(labels) >= 0)


def test_proportional_labels():
  # 3 classes as 6 : 3 : 1 among 10 reference labels, class 3 absent.
  ref = [0] * 6 + [1] * 3 + [2]
  np.random.RandomState(0).shuffle(ref)
  labels = sample_lib.proportional_labels(10, ref, 4)
  assert np.bincount(labels, minlength=4).tolist() == [6, 3, 1, 0]
  assert np.all(np.diff(labels) >= 0)  # grouped by class
  # 7 samples: exact shares 4.2, 2.1, 0.7 -> floors 4, 2, 0 and the one
  # left over to the largest remainder (class 2).
  assert np.bincount(sample_lib.proportional_labels(7, ref, 4),
                     minlength=4).tolist() == [4, 2, 1, 0]
  # Any count sums exactly; ties go to the lower class id.
  for n in range(0, 40):
    counts = np.bincount(sample_lib.proportional_labels(n, [0, 1, 2], 3),
                         minlength=3)
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    assert np.all(np.diff(counts) <= 0)
  with pytest.raises(ValueError, match="need reference labels"):
    sample_lib.proportional_labels(4, [], 3)
  with pytest.raises(ValueError, match=r"Class id 5 is out of range"):
    sample_lib.proportional_labels(4, [0, 5], 3)


def test_sample_labels_follow_the_reference_or_spread_evenly():
  class Ref:  # The two fields `sample_class_ids` reads.
    num_reference = 8
    real = real_images.RealSet(
        features=np.zeros((12, 4), np.float32),
        labels=np.array([2] * 6 + [0] * 2 + [1] * 4),  # 4 past the reference
        split_size=12)
  counts = lambda how, n: np.bincount(  # noqa: E731
      generation.sample_class_ids(how, n, Ref, 3), minlength=3).tolist()
  assert counts("reference", 8) == [2, 0, 6]
  assert counts("reference", 16) == [4, 0, 12]
  assert counts("balanced", 8) == [3, 3, 2]
  with pytest.raises(ValueError, match=r"sample_labels='even'"):
    generation.sample_class_ids("even", 8, Ref, 3)


def test_cli_prints_the_table(run_dir, tmp_path, monkeypatch, capsys):
  from maskgit_jax import evaluate  # pylint: disable=import-outside-toplevel
  workdir, _ = run_dir
  monkeypatch.setattr(real_images, "make_feature_fn",
                      lambda *a, **k: (PixelFeatures(), "test-pixels"))
  output = tmp_path / "cli.json"
  try:
    flags.FLAGS(["evaluate", f"--workdir={workdir}", "--stages=tokenizer",
                 "--num_real=12", "--batch_size=8", f"--output={output}",
                 f"--cache_dir={tmp_path / 'cache'}"])
    evaluate.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()
  out = capsys.readouterr().out
  assert "Stage 1, tokenizer (12 eval images)" in out
  assert str(output) in out
  assert json.loads(output.read_text())["tokenizer"]["num_images"] == 12


def test_cli_step_flags_pick_a_checkpoint(run_dir, tmp_path, monkeypatch,
                                         capsys):
  """--tokenizer_step evaluates that step's checkpoint; a step that is not
  there, or unreadable, is one error line, not another step's weights."""
  from maskgit_jax import evaluate  # pylint: disable=import-outside-toplevel
  workdir, _ = run_dir
  monkeypatch.setattr(real_images, "make_feature_fn",
                      lambda *a, **k: (PixelFeatures(), "test-pixels"))
  output = tmp_path / "step.json"
  argv = ["evaluate", f"--workdir={workdir}", "--stages=tokenizer",
          "--num_real=12", "--batch_size=8", f"--output={output}",
          f"--cache_dir={tmp_path / 'cache'}"]
  try:
    flags.FLAGS(argv + ["--tokenizer_step=2"])
    evaluate.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()
  assert json.loads(output.read_text())["models"]["tokenizer"]["step"] == 2
  output.unlink()
  for step, message in (
      (3, r"error: no checkpoint of step 3 in .*tokenizer/checkpoints "
          r"\(steps: \[2, 4\]\)"),
      (4, r"error: checkpoint .*tokenizer/checkpoints/4 is unreadable")):
    try:
      flags.FLAGS(argv + [f"--tokenizer_step={step}"])
      with pytest.raises(SystemExit, match=message):
        evaluate.main(["evaluate"])
    finally:
      flags.FLAGS.unparse_flags()
    assert not output.exists()
  try:
    flags.FLAGS(["evaluate", f"--samples={tmp_path / 's.npz'}",
                 "--transformer_step=2"])
    with pytest.raises(SystemExit, match=r"error: --transformer_step picks "
                       r"a run's checkpoint; with --samples"):
      evaluate.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()
  capsys.readouterr()


def test_cli_decoding_flags_override_the_runs_sampling(run_dir, tmp_path,
                                                      monkeypatch):
  # A run's config.json (no --config file) with other decoding settings: the
  # report records and uses them; the run's own config stays as it was.
  from maskgit_jax import evaluate  # pylint: disable=import-outside-toplevel
  workdir, _ = run_dir
  before = (workdir / "config.json").read_text()
  monkeypatch.setattr(real_images, "make_feature_fn",
                      lambda *a, **k: (PixelFeatures(), "test-pixels"))
  output = tmp_path / "decoding.json"
  argv = ["evaluate", f"--workdir={workdir}", "--stages=transformer",
          "--num_samples=8", "--num_real=12", "--num_train=10",
          "--batch_size=8", f"--output={output}",
          f"--cache_dir={tmp_path / 'cache'}", "--num_iter=3",
          "--sampling_temperature=1.1", "--sampling_temperature_end=0.5",
          "--refine_steps=2", "--refine_fraction=0.5",
          "--refine_choice_temperature=1", "--refine_temperature=0.9",
          "--choice_temperature=9"]
  try:
    flags.FLAGS(argv)
    evaluate.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()
  options = json.loads(output.read_text())["transformer"]["decode_options"]
  assert (options["num_iter"], options["sampling_temperature"],
          options["sampling_temperature_end"],
          options["choice_temperature"]) == (3, 1.1, 0.5, 9.0)
  assert (options["refine_steps"], options["refine_fraction"],
          options["refine_choice_temperature"],
          options["refine_temperature"]) == (2, 0.5, 1.0, 0.9)
  assert (workdir / "config.json").read_text() == before
  try:
    flags.FLAGS(argv[:-4] + ["--num_iter=0"])
    with pytest.raises(SystemExit,
                       match=r"error: --num_iter=0 must be an int >= 1"):
      evaluate.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()
  try:  # given samples are not decoded: the flag would do nothing
    flags.FLAGS(["evaluate", f"--samples={tmp_path / 's.npz'}", "--top_k=5"])
    with pytest.raises(SystemExit, match=r"error: --top_k decodes samples"):
      evaluate.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()


def run_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "maskgit_jax.evaluate", *args], cwd=ROOT,
      capture_output=True, text=True, env=env, timeout=300)


def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
  result = run_cli(f"--workdir={tmp_path / 'missing'}")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: Training run folder not found: {tmp_path / 'missing'} (it does "
      "not exist)")
  assert "Traceback" not in result.stderr
  output = tmp_path / "eval.json"
  previous = '{"format": "maskgit_jax.evaluation/1", "previous": true}'
  output.write_text(previous)
  result = run_cli(f"--workdir={tmp_path}", "--config=configs/fashion_mnist.py",
                   "--config.image_size=16", "--config.tokenizer.preset=tiny",
                   "--config.transformer.preset=tiny",
                   f"--transformer_checkpoint={tmp_path / 'missing.msgpack'}",
                   f"--output={output}")
  assert result.returncode != 0
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert errors == [f"error: Checkpoint file not found: "
                    f"{tmp_path / 'missing.msgpack'}"]
  assert "Traceback" not in result.stderr
  assert output.read_text() == previous
  assert sorted(os.listdir(tmp_path)) == ["eval.json"]
