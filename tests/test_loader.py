"""The one model loader (`store.loader`): each source, each failure, once."""
import os

import flax
import jax
import numpy as np
import pytest

from maskgit_jax.common import files
from maskgit_jax.store import checkpoint as checkpoint_lib
from maskgit_jax.store import loader
import test_train


@pytest.fixture(scope="module")
def config():
  return test_train.tiny_config()


@pytest.fixture(scope="module")
def random_models(config):
  return loader.load_models(config, random_init=True, required=loader.STAGES)


def _scaled(variables, factor):
  return jax.tree.map(lambda x: np.asarray(x) * factor, variables)


def _first_leaf(variables):
  return np.asarray(jax.tree.leaves(variables)[0])


def _save_run(workdir, config, models):
  """A workdir as training writes it: config.json and, per stage, steps 2
  and 4 with params (x2 / x4) and EMA params (x20 / x40)."""
  files.write_config_json(config, os.path.join(workdir, "config.json"))
  for stage in loader.STAGES:
    params = models.variables(stage)["params"]
    ckpt = checkpoint_lib.Checkpointer(loader.checkpoint_dir(workdir, stage),
                                       async_save=False)
    for step in (2, 4):
      ckpt.save(step, {"params": _scaled(params, step),
                       "ema_params": _scaled(params, 10 * step),
                       "step": np.int32(step)}, {"next": step})
    ckpt.close()


def test_random_weights_follow_the_seed(config, random_models):
  again = loader.load_models(config, random_init=True)
  assert random_models.sources["tokenizer"]["source"] == "random"
  np.testing.assert_array_equal(_first_leaf(again.tokenizer_variables),
                                _first_leaf(random_models.tokenizer_variables))


def test_workdir_newest_checkpoint_ema_preferred(tmp_path, config,
                                                 random_models):
  _save_run(str(tmp_path), config, random_models)
  models = loader.load_models(loader.run_config(str(tmp_path)), str(tmp_path))
  for stage in loader.STAGES:
    info = models.sources[stage]
    assert (info["source"], info["step"], info["params"]) == (
        "workdir", 4, "ema")
    np.testing.assert_allclose(
        _first_leaf(models.variables(stage)),
        40 * _first_leaf(random_models.variables(stage)))


def test_config_tokenizer_file_only_for_a_stage_two_run(tmp_path, config,
                                                        random_models):
  """`config.tokenizer_checkpoint` is the tokenizer of a stage-2-only run.
  A run whose stages include the tokenizer trained stage 2 on its own: a
  record naming both (written before the key was refused beside the stage)
  loads the run's checkpoints; before, it silently loaded the file, a
  tokenizer the transformer was not trained on."""
  file = tmp_path / "released_tokenizer"
  file.write_bytes(flax.serialization.to_bytes(
      _scaled(random_models.tokenizer_variables, 3)))
  both = config.copy_and_resolve_references()
  both.tokenizer_checkpoint = str(file)
  _save_run(str(tmp_path / "run"), both, random_models)
  models = loader.load_models(both, str(tmp_path / "run"))
  assert models.sources["tokenizer"]["source"] == "workdir"
  np.testing.assert_allclose(
      _first_leaf(models.tokenizer_variables),
      40 * _first_leaf(random_models.tokenizer_variables))
  # Nothing of its own (no workdir, or none saved yet): the file.
  for workdir in (None, str(tmp_path / "empty")):
    if workdir:
      os.makedirs(workdir)
    models = loader.load_models(both, workdir, stages=("tokenizer",))
    assert models.sources["tokenizer"]["path"] == str(file)
  # A stage-2 run: the file, even beside tokenizer checkpoints.
  stage2 = both.copy_and_resolve_references()
  stage2.stages = ("transformer",)
  models = loader.load_models(stage2, str(tmp_path / "run"))
  assert models.sources["tokenizer"] == {"source": "file",
                                         "path": str(file), "step": None}
  np.testing.assert_allclose(
      _first_leaf(models.tokenizer_variables),
      3 * _first_leaf(random_models.tokenizer_variables))


def test_exported_folder_and_released_files_each_on_its_own(
    tmp_path, config, random_models):
  """An exported folder's stage files are used each on its own (before: the
  sampler needed both), and an explicit file wins over everything."""
  folder = tmp_path / "exported"
  folder.mkdir()
  files.write_config_json(config, str(folder / "config.json"))
  (folder / "tokenizer.msgpack").write_bytes(flax.serialization.to_bytes(
      _scaled(random_models.tokenizer_variables, 3)))
  models = loader.load_models(config, str(folder))
  assert models.sources["tokenizer"] == {
      "source": "file", "path": str(folder / "tokenizer.msgpack"),
      "step": None}
  assert models.transformer_variables is None
  assert "transformer" not in models.sources
  with pytest.raises(loader.WeightsNotFound,
                     match="No readable checkpoint in .*transformer"):
    loader.load_models(config, str(folder), required=loader.STAGES)
  released = tmp_path / "tr.msgpack"
  released.write_bytes(flax.serialization.to_bytes(
      random_models.transformer_variables))
  models = loader.load_models(config, str(folder),
                              transformer_checkpoint=str(released),
                              required=loader.STAGES)
  assert models.sources["transformer"]["path"] == str(released)


def test_given_variables_win_and_are_checked(config, random_models):
  models = loader.load_models(
      config, tokenizer_variables=random_models.tokenizer_variables,
      stages=("tokenizer",))
  assert models.sources["tokenizer"]["source"] == "given"
  with pytest.raises(ValueError, match="the given transformer variables"):
    loader.load_models(config, stages=("transformer",),
                       transformer_variables=random_models.tokenizer_variables)


def test_failures_are_one_line_each(tmp_path, config, random_models):
  with pytest.raises(loader.RunNotFound, match=r"Training run folder not "
                     r"found: .*nowhere \(it does not exist\)"):
    loader.load_models(config, str(tmp_path / "nowhere"))
  with pytest.raises(loader.RunNotFound, match="config.json does not exist"):
    loader.run_config(str(tmp_path))
  # Both kinds are FileNotFoundError and ValueError, as every CLI catches.
  assert issubclass(loader.RunNotFound, (FileNotFoundError, ValueError))
  assert issubclass(loader.WeightsNotFound, FileNotFoundError)
  with pytest.raises(loader.WeightsNotFound, match="No readable checkpoint"):
    loader.load_models(config, str(tmp_path), required=("tokenizer",))
  _save_run(str(tmp_path / "run"), config, random_models)
  other = test_train.tiny_config()
  other.transformer.hidden_size = 32
  with pytest.raises(ValueError, match=r"transformer/checkpoints/4: params/"
                     r".* has shape \(16,\), the model expects \(32,\)"):
    loader.load_models(other, str(tmp_path / "run"))


def test_a_step_picks_that_checkpoint(tmp_path, config, random_models):
  """`steps={stage: n}` (`--tokenizer_step`, `--transformer_step`) loads
  that step's checkpoint, EMA preferred, instead of the newest."""
  _save_run(str(tmp_path), config, random_models)
  models = loader.load_models(config, str(tmp_path),
                              steps={"tokenizer": 2, "transformer": None})
  assert models.sources["tokenizer"]["step"] == 2
  assert models.sources["transformer"]["step"] == 4
  np.testing.assert_allclose(
      _first_leaf(models.tokenizer_variables),
      20 * _first_leaf(random_models.tokenizer_variables))
  np.testing.assert_allclose(
      _first_leaf(models.transformer_variables),
      40 * _first_leaf(random_models.transformer_variables))


def test_a_step_that_is_not_there_is_one_line(tmp_path, config,
                                              random_models):
  _save_run(str(tmp_path / "run"), config, random_models)
  run = str(tmp_path / "run")
  with pytest.raises(ValueError, match=r"no checkpoint of step 3 in .*"
                     r"tokenizer/checkpoints \(steps: \[2, 4\]\)"):
    loader.load_models(config, run, steps={"tokenizer": 3})
  with pytest.raises(ValueError, match=r"must be an int >= 0 \(a step\)"):
    loader.load_models(config, run, steps={"transformer": -1})
  with pytest.raises(ValueError, match="the transformer is not loaded"):
    loader.load_models(config, run, stages=("tokenizer",),
                       steps={"transformer": 2})
  with pytest.raises(ValueError, match=r"no checkpoint of step 2: .*"
                     r"transformer/checkpoints does not exist"):
    loader.load_models(config, str(tmp_path), steps={"transformer": 2})
  with pytest.raises(ValueError, match="needs a training run's workdir"):
    loader.load_models(config, random_init=True, steps={"tokenizer": 2})
  path = tmp_path / "tok.msgpack"
  path.write_bytes(flax.serialization.to_bytes(
      random_models.tokenizer_variables))
  with pytest.raises(ValueError, match=r"--tokenizer_step=2 picks a "
                     r"checkpoint of a training run, but .* the file "):
    loader.load_models(config, run, tokenizer_checkpoint=str(path),
                       steps={"tokenizer": 2})
  with pytest.raises(ValueError, match="the variables were given"):
    loader.load_models(
        config, run, steps={"tokenizer": 2},
        tokenizer_variables=random_models.tokenizer_variables)
  # An unreadable step is named, not replaced by another.
  step_dir = tmp_path / "run" / "tokenizer" / "checkpoints" / "2"
  for f in step_dir.rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "state" in str(f):
      f.write_bytes(b"garbage")
  with pytest.raises(ValueError, match=r"tokenizer/checkpoints/2 is "
                     r"unreadable"):
    loader.load_models(config, run, steps={"tokenizer": 2})
  # Without a step, every step unreadable is still named as such.
  for f in (tmp_path / "run" / "tokenizer" / "checkpoints" / "4").rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "state" in str(f):
      f.write_bytes(b"garbage")
  with pytest.raises(ValueError, match=r"no readable checkpoint in .*"
                     r"tokenizer/checkpoints \(steps \[4, 2\]; newest: "):
    loader.load_models(config, run, stages=("tokenizer",))
