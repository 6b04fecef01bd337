"""Resuming a run: checkpoints that do not fit, passing I/O errors, changed
settings, epochs, and evaluators inside the loop (issue 13, defects a-e)."""
import json
import os

import jax
import jax.numpy as jnp
import pytest

from maskgit_jax import data as data_lib
from maskgit_jax.evaluation import evaluators
from maskgit_jax.store import checkpoint as checkpoint_lib
from maskgit_jax.train_lib import config_record
from maskgit_jax.train_lib import periodic
from maskgit_jax.train_lib import run
import test_train


def _state(width):
  return {"params": {"w": jnp.zeros((4, width), jnp.float32),
                     "b": jnp.zeros((3,), jnp.float32)},
          "step": jnp.int32(0)}


def _saved(tmp_path, width=5):
  path = tmp_path / "checkpoints"
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)
  for step in (2, 4):
    ckpt.save(step, _state(width), {"next": step})
  ckpt.close()
  return path


def test_a_checkpoint_of_another_model_stops_and_stays(tmp_path):
  path = _saved(tmp_path)
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)
  with pytest.raises(checkpoint_lib.CheckpointMismatch,
                     match=r"4 does not fit the config: params/w has shape "
                     r"\(4, 5\) in the checkpoint and \(4, 7\) in the config"):
    ckpt.restore_latest(jax.eval_shape(lambda: _state(7)))
  ckpt.close()
  assert sorted(os.listdir(path)) == ["2", "4"]  # nothing set aside


def test_a_passing_io_error_is_retried_and_nothing_moves(tmp_path,
                                                         monkeypatch):
  path = _saved(tmp_path)
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)
  real = ckpt.restore
  calls = []

  def flaky(step, abstract):
    calls.append(step)
    if len(calls) == 1:
      raise OSError("transient: connection reset")
    return real(step, abstract)
  monkeypatch.setattr(ckpt, "restore", flaky)
  monkeypatch.setattr(checkpoint_lib, "RETRY_SECONDS", 0.0)
  step, _, data = ckpt.restore_latest(jax.eval_shape(lambda: _state(5)))
  assert (step, data, calls) == (4, {"next": 4}, [4, 4])
  ckpt.close()
  assert sorted(os.listdir(path)) == ["2", "4"]


def test_a_lasting_io_error_stops_without_renaming(tmp_path, monkeypatch):
  path = _saved(tmp_path)
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)

  def denied(step, abstract):
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(ckpt, "restore", denied)
  monkeypatch.setattr(checkpoint_lib, "RETRY_SECONDS", 0.0)
  with pytest.raises(checkpoint_lib.CheckpointUnreadable,
                     match="4 cannot be read.*nothing was renamed"):
    ckpt.restore_latest(jax.eval_shape(lambda: _state(5)))
  ckpt.close()
  assert sorted(os.listdir(path)) == ["2", "4"]


def test_a_and_d_resume_with_another_model_size(tmp_path):
  """The issue's reproduction: a finished run, then the same command with
  another transformer size. Before: every stage-2 checkpoint renamed
  *.corrupt-* and stage 2 retrained from step 0."""
  config = test_train.tiny_config(steps=2)
  run.train_and_evaluate(config, str(tmp_path))
  before = {s: sorted(os.listdir(tmp_path / s / "checkpoints"))
            for s in ("tokenizer", "transformer")}
  recorded = (tmp_path / "config.json").read_text()
  other = test_train.tiny_config(steps=2)
  other.transformer.num_hidden_layers = 3  # not the tiny preset's
  # d: the recorded config differs in a key that changes the weights.
  with pytest.raises(ValueError, match=r"trained with other settings: "
                     r"transformer.num_hidden_layers: 2 -> 3"):
    run.train_and_evaluate(other, str(tmp_path))
  assert (tmp_path / "config.json").read_text() == recorded
  # a: without the record, the checkpoint itself stops the run.
  os.remove(tmp_path / "config.json")
  with pytest.raises(checkpoint_lib.CheckpointMismatch,
                     match="does not fit the config"):
    run.train_and_evaluate(other, str(tmp_path))
  after = {s: sorted(os.listdir(tmp_path / s / "checkpoints"))
           for s in ("tokenizer", "transformer")}
  assert after == before


def test_d_a_longer_run_is_recorded(tmp_path):
  config = test_train.tiny_config(stages=("tokenizer",), steps=2)
  run.train_and_evaluate(config, str(tmp_path))
  config.tokenizer_training.num_steps = 4
  config.sampling.num_iter = 3
  run.train_and_evaluate(config, str(tmp_path))
  recorded = json.loads((tmp_path / "config.json").read_text())
  assert recorded["tokenizer_training"]["num_steps"] == 4
  lines = (tmp_path / "config_changes.jsonl").read_text().splitlines()
  changes = json.loads(lines[-1])["changes"]
  assert changes["tokenizer_training.num_steps"] == {"old": 2, "new": 4}
  assert changes["sampling.num_iter"] == {"old": 2, "new": 3}
  assert sorted(os.listdir(tmp_path / "tokenizer" / "checkpoints")) == [
      "2", "4"]


def test_d_free_and_fixed_keys():
  assert config_record.is_free("transformer_training.num_steps")
  assert config_record.is_free("evaluation.num_samples")
  assert config_record.is_free("cpu_devices")  # like the mesh
  assert config_record.is_free("tokenizer.group_norm")  # how, not what
  assert not config_record.is_free("transformer.hidden_size")
  assert not config_record.is_free("transformer_training.optimizer.lr")
  assert config_record.differences({"a": {"b": 1}}, {"a": {"b": 2, "c": 3}}
                                   ) == [("a.b", 1, 2), ("a.c", None, 3)]


def test_c_an_epoch_is_the_pipelines_epoch():
  """256 examples at batch 24: the pipeline's epoch is 256 // 24 = 10 steps,
  so 2 epochs are 20 steps (before: ceil(2 * 256 / 24) = 22, two steps into
  the third epoch)."""
  config = test_train.tiny_config()
  section = config.tokenizer_training
  section.batch_size = 24
  section.num_steps = "2 epochs"
  section.checkpoint_every = "1 epoch"
  dataset = data_lib.create_dataset(
      data_lib.config.for_model(config, 1), "train", 24)
  assert dataset.steps_per_epoch == 10
  resolved = run.resolve_durations(section, dataset.steps_per_epoch,
                                   "tokenizer_training")
  assert (resolved.num_steps, resolved.checkpoint_every) == (20, 10)
  assert periodic.to_steps("2 epochs", steps_per_epoch=10) == 20


class _CountingFeatures:
  name = None  # not cached

  def __call__(self, images):
    return images.reshape(images.shape[0], -1)[:, :16].astype("float32")


def test_evaluators_run_inside_the_loop(tmp_path):
  """Evaluators named in config.evaluation run every `every` (a duration)
  and at the end of the stage; their scalars reach metrics.jsonl. A
  re-run evaluates nothing again (e: the reports are keyed by what made
  them), and a change of evaluation settings evaluates again."""
  config = test_train.tiny_config(stages=("tokenizer",), steps=4)
  config.evaluation.enabled = True
  config.evaluation.num_real = 12
  config.evaluation.num_samples = 12
  config.evaluation.batch_size = 8
  config.evaluation.evaluators.reconstruction.every = "2 steps"
  extractor = _CountingFeatures()

  def hooks(*args, **kwargs):
    return evaluators.make_hooks(*args, feature_extractor=extractor, **kwargs)
  run.train_and_evaluate(config, str(tmp_path), hooks=hooks)
  for step in (2, 4):
    assert (tmp_path / f"eval_tokenizer_{step}.json").is_file()
  lines = [json.loads(l) for l in
           (tmp_path / "tokenizer" / "metrics.jsonl").read_text().splitlines()]
  evals = [l for l in lines if "eval/rfid" in l]
  assert [l["step"] for l in evals] == [2, 4]
  assert all(l["eval/rfid_floor"] > 0 and "eval/psnr" in l for l in evals)
  report = json.loads((tmp_path / "eval_tokenizer_4.json").read_text())
  assert not os.path.isabs(report["path"])  # h: relative paths
  assert not os.path.isabs(report["models"]["tokenizer"]["path"] or "")
  # A re-run (the stage is complete): the step-4 report is reused.
  mtime = os.path.getmtime(tmp_path / "eval_tokenizer_4.json")
  run.train_and_evaluate(config, str(tmp_path), hooks=hooks)
  assert os.path.getmtime(tmp_path / "eval_tokenizer_4.json") == mtime
  # e: other settings (num_real) make a new report for the same step.
  config.evaluation.num_real = 13
  run.train_and_evaluate(config, str(tmp_path), hooks=hooks)
  report = json.loads((tmp_path / "eval_tokenizer_4.json").read_text())
  assert report["settings"]["num_real"] == 13


def test_a_new_run_that_fails_before_saving_leaves_no_record(tmp_path):
  """A data error found when the data is first read (after config.json is
  written): before, the record stayed and refused the corrected command as
  "trained with other settings: data.path"."""
  workdir = tmp_path / "run"
  bad = test_train.tiny_config(stages=("tokenizer",), steps=2)
  bad.data.path = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    run.train_and_evaluate(bad, str(workdir))
  assert not workdir.exists()  # created by the run, and empty: removed
  good = test_train.tiny_config(stages=("tokenizer",), steps=2)
  run.train_and_evaluate(good, str(workdir))
  assert sorted(os.listdir(workdir / "tokenizer" / "checkpoints")) == ["2"]
  assert json.loads((workdir / "config.json").read_text())["data"][
      "path"] is None


def test_a_run_that_fails_after_saving_keeps_its_record(tmp_path,
                                                        monkeypatch):
  """Stage 1 saved, then stage 2 fails: the record describes saved
  weights and stays, with the checkpoints."""
  from maskgit_jax.train_lib import transformer_task

  def broken(*args, **kwargs):
    raise RuntimeError("stage 2 broke")
  monkeypatch.setattr(transformer_task, "make_task", broken)
  config = test_train.tiny_config(steps=2)
  with pytest.raises(RuntimeError, match="stage 2 broke"):
    run.train_and_evaluate(config, str(tmp_path))
  assert (tmp_path / "config.json").is_file()
  assert sorted(os.listdir(tmp_path / "tokenizer" / "checkpoints")) == ["2"]


def test_a_failing_resume_keeps_the_record(tmp_path):
  """A record this invocation did not write is never removed, even where no
  checkpoint was saved (e.g. a run stopped during its first steps)."""
  config = test_train.tiny_config(stages=("tokenizer",), steps=2)
  config.data.path = str(tmp_path / "nowhere")
  os.makedirs(tmp_path / "run")
  recorded = config_record.record(config, str(tmp_path / "run"),
                                  log=lambda _: None)
  with pytest.raises(FileNotFoundError):
    run.train_and_evaluate(config, str(tmp_path / "run"))
  assert os.path.isfile(recorded)


def test_training_into_an_exported_folder_is_refused(tmp_path):
  """`sample` and `evaluate` read an exported folder's files before any
  checkpoint: a run trained into one (e.g. checkpoints/fashion_mnist) was
  silently not what they sampled. Refused before anything is written."""
  folder = tmp_path / "exported"
  folder.mkdir()
  (folder / "transformer.msgpack").write_bytes(b"weights")
  (folder / "config.json").write_text("{}")
  config = test_train.tiny_config(stages=("tokenizer",), steps=2)
  with pytest.raises(ValueError, match=r"--workdir=.*exported is an exported "
                     r"folder \(it has .*transformer.msgpack\)"):
    run.train_and_evaluate(config, str(folder))
  assert sorted(os.listdir(folder)) == ["config.json", "transformer.msgpack"]
  assert (folder / "config.json").read_text() == "{}"


def test_a_workdir_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path):
  """Before: a FileExistsError traceback for a file, and an OS error that
  named neither flag nor problem for a folder that cannot be made."""
  from maskgit_jax.store import loader  # pylint: disable=import-outside-toplevel
  afile = tmp_path / "notes.txt"
  afile.write_text("mine")
  config = test_train.tiny_config(stages=("tokenizer",), steps=2)
  with pytest.raises(ValueError, match=r"--workdir=.*notes.txt is a file, "
                     r"not a folder\.$"):
    run.train_and_evaluate(config, str(afile))
  with pytest.raises(ValueError, match=r"--workdir=.*notes.txt/run cannot be "
                     r"created: Not a directory\.$"):
    run.train_and_evaluate(config, str(afile / "run"))
  assert afile.read_text() == "mine"
  with pytest.raises(loader.RunNotFound, match=r"notes.txt \(a file, not a "
                     r"folder\)"):
    loader.check_workdir(str(afile))


def test_a_second_training_job_on_a_workdir_is_refused(tmp_path):
  """Two `train` commands on one workdir saved the same steps into the same
  folders (the second died on the first's temporary orbax files). The
  first holds the lock (here: this test); a second is refused with one line
  before it writes anything. A lock file left by a killed run locks
  nothing, and a finished run removes its own."""
  from maskgit_jax.train_lib import run_lock  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "run"
  workdir.mkdir()
  config = test_train.tiny_config(stages=("tokenizer",), steps=2)
  with run_lock.hold(str(workdir)) as held:
    assert held and open(held).read() == f"{os.getpid()}\n"
    with pytest.raises(ValueError, match=r"--workdir=.*run is in use by "
                       rf"another training process \(pid {os.getpid()}\): "
                       "wait for it to end, or train into another folder."):
      run.train_and_evaluate(config, str(workdir))
    assert os.listdir(workdir) == [os.path.basename(held)]
  assert os.listdir(workdir) == []
  (workdir / ".train.lock.0").write_text("12345\n")  # A killed run's.
  run.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir)) == ["config.json", "tokenizer"]
